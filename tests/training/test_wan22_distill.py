"""Contract: sparsity-aware TDM distillation runs on Wan2.2. TI2V-5B (one timestep per video token, 48 latent
channels) and T2V-A14B (one expert distilled, by default the low-noise one) take a few steps with finite losses that
move only the distilled expert's LoRAs; ``python -m training.distill`` on an A14B folder exports a LoRA that records
its expert and loads onto that expert."""

from __future__ import annotations

import math

import pytest
import torch
from training_helpers import make_distiller

from blade_ops.families import WAN22_A14B, WAN22_TI2V
from training.distill import train
from training.models import FAKE, STUDENT

TI2V, A14B = WAN22_TI2V.name, WAN22_A14B.name


@pytest.mark.parametrize("family", [TI2V, A14B])
def test_few_tdm_steps_give_finite_losses(family, embeddings_folder, tmp_path):
    d = make_distiller(family, embeddings_folder(family), tmp_path)
    fam = d.family
    assert d.latent_shape[1] == fam.latent_channels
    expected = "transformer_2" if fam is WAN22_A14B else "transformer"
    assert d.expert == expected and d.models.transformer is getattr(d.bundle, expected)
    assert d.guidance == (3.0 if fam is WAN22_A14B else 5.0)  # the low-noise expert's CFG for A14B
    lora_before = {a: d.lora_tensors(a) for a in (STUDENT, FAKE)}

    logs = train(d, 2)

    assert all(math.isfinite(v) for log in logs for v in (log.loss_fake, log.loss_student))
    assert all(0.0 < log.density <= 1.0 for log in logs)
    for adapter in (STUDENT, FAKE):
        after = d.lora_tensors(adapter)
        assert any(not torch.equal(after[n], lora_before[adapter][n]) for n in after), adapter
    if fam is WAN22_A14B:  # the other expert is left alone: no adapters on the high-noise transformer
        assert not any("lora_" in n for n, _ in d.bundle.transformer.named_parameters())


def test_distill_command_on_an_a14b_folder(tiny_folder, tmp_path):
    """`python -m training.distill` (in-process, one step, CPU) on the tiny A14B diffusers folder."""
    from blade_ops.lora import check_lora_fits, read_lora
    from blade_ops.models import load_model_bundle
    from training.distill import main
    from training.encode_prompts import main as encode_main

    folder = tiny_folder(A14B)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\na blue box\n")
    encode_main(["--model", str(folder), "--prompts", str(prompts), "--output", str(tmp_path / "emb"),
                 "--dtype", "fp32", "--device", "cpu"])
    rc = main(["--model", str(folder), "--prompt_embeddings", str(tmp_path / "emb"), "--output_dir",
               str(tmp_path / "out"), "--width", "64", "--height", "64", "--frames", "5", "--lora_rank", "4",
               "--lora_alpha", "4", "--train_batch_size", "1", "--gradient_accumulation_steps", "1",
               "--max_train_steps", "1", "--mixed_precision", "no", "--attention_backend", "torch",
               "--asa_overrides", '{"block_size": 16, "num_keep": 4}', "--validation_steps", "0",
               "--gradient_checkpointing", "false", "--resume", ""])
    assert rc == 0
    lora = read_lora(tmp_path / "out" / "pytorch_lora_weights.safetensors")
    assert lora.info.metadata["expert"] == "transformer_2" and lora.info.metadata["blade.family"] == A14B
    bundle = load_model_bundle(folder, parts=("transformer",))
    check_lora_fits(bundle.transformer_2, lora)
