"""Contract: the shipped toy teacher and its distilled BLADE LoRA load through the pack's loaders and make a toy
video in 8 sparse steps without CFG through blade_ops' pipeline pieces, on the CPU, in seconds."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from blade_ops.attention import ASAConfig, install_asa
from blade_ops.families import WAN
from blade_ops.lora import apply_lora, read_lora
from blade_ops.pipeline.decode import decode
from blade_ops.pipeline.denoise import Guidance, denoise
from blade_ops.pipeline.latents import prepare_latents
from blade_ops.sampling import make_sampler
from blade_ops.text import encode_prompts
from training.toy.model import load_toy_bundle
from training.toy.run_all import toy_asa

ASSETS = Path(__file__).resolve().parents[2] / "training" / "toy" / "assets"


def _sample(bundle, spec, prompt: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    latents = prepare_latents(WAN, 1, (spec.frames, spec.size, spec.size), generator)
    embeds = encode_prompts(bundle, [prompt], guidance=False)
    sampler = make_sampler("blade", WAN, bundle.scheduler_config, steps=8)
    return denoise(bundle, embeds, latents, sampler, Guidance(1.0), generator=generator)


def test_shipped_toy_model_makes_a_video_in_8_sparse_steps():
    lora = read_lora(ASSETS / "toy_blade_lora.safetensors")
    assert lora.info.steps == 8 and lora.info.asa["block_size"] == 16 and lora.info.base_model

    bundle, spec = load_toy_bundle(ASSETS / "toy-wan")
    teacher_latents = _sample(bundle, spec, "a red circle moving right")
    install_asa(bundle.transformer, ASAConfig.for_family("wan", **toy_asa(spec)), "torch")
    apply_lora(bundle.transformer, ASSETS / "toy_blade_lora.safetensors")
    start = time.perf_counter()
    latents = _sample(bundle, spec, "a red circle moving right")
    frames = decode(bundle, latents)[0]  # [F, H, W, C] in [0, 1]
    seconds = time.perf_counter() - start

    assert frames.shape == (17, 128, 128, 3) and seconds < 30
    assert not torch.allclose(latents, teacher_latents)
    red = frames[..., 0] > 0.5
    assert red.any() and (frames[..., 1][red] < 0.5).float().mean() > 0.8  # the student draws a red shape


def test_distill_command_runs_on_the_shipped_toy_teacher(tmp_path):
    """`training.distill --config training/configs/toy.yaml` (one step, CPU): prompts -> LoRA + checkpoint."""
    from training.distill import main
    from training.encode_prompts import main as encode_main
    from training.toy.domain import all_prompts

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(all_prompts()[:4]))
    encode_main(["--model", str(ASSETS / "toy-wan"), "--prompts", str(prompts), "--output", str(tmp_path / "emb"),
                 "--dtype", "fp32", "--device", "cpu"])
    config = Path(__file__).resolve().parents[2] / "training" / "configs" / "toy.yaml"
    main(["--config", str(config), "--model", str(ASSETS / "toy-wan"), "--prompt_embeddings", str(tmp_path / "emb"),
          "--output_dir", str(tmp_path / "out"), "--max_train_steps", "1", "--train_batch_size", "1",
          "--mixed_precision", "no", "--validation_steps", "0"])
    lora = read_lora(tmp_path / "out" / "pytorch_lora_weights.safetensors")
    assert lora.info.training_steps == 1 and lora.info.rank == 32
    assert (tmp_path / "out" / "checkpoints" / "checkpoint-1" / "state.json").is_file()
