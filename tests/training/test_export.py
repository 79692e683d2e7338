"""Contract: the exported student LoRA is in BLADE's release naming with metadata, loads through the nodes' LoRA
loader (blade_ops.lora.apply_lora) onto a fresh base model and changes its output as the trained student does."""

from __future__ import annotations

import torch
from training_helpers import make_distiller, tiny_bundle

from blade_ops.lora import apply_lora, read_lora
from training.distill import train
from training.models import STUDENT


def test_exported_lora_loads_and_changes_output(embeddings_folder, tmp_path):
    d = make_distiller("wan", embeddings_folder("wan"), tmp_path, max_train_steps=2, learning_rate=1e-2,
                       export_dtype="fp32")
    train(d)
    path = d.export_lora(tmp_path / "pytorch_lora_weights.safetensors")

    lora = read_lora(path)
    assert lora.info.source_format == "diffusers"
    assert lora.info.rank == 4 and lora.info.alpha == 4.0 and lora.info.steps == 8 and lora.info.training_steps == 2
    assert lora.info.asa["block_size"] == 16 and lora.info.base_model == "tiny-wan"
    assert lora.info.num_modules == 2 * 2 * 4  # 2 blocks x (attn1, attn2) x (q, k, v, out)
    assert all(k.startswith("transformer.blocks.") for k in lora.raw_keys)

    fresh = tiny_bundle("wan").transformer
    x = torch.randn(d.latent_shape, generator=torch.Generator().manual_seed(3))
    t, text = torch.tensor([800, 400]), d.embeddings.get([0, 1])
    with torch.no_grad():
        before = fresh(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        apply_lora(fresh, path)
        after = fresh(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        d.models.set_role(STUDENT)
        from blade_ops.attention import remove_asa

        remove_asa(d.models.transformer)  # compare with the student's weights under the same dense attention
        student = d.models.transformer(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
    assert not torch.allclose(before, after)
    assert torch.allclose(after, student, atol=1e-5)
