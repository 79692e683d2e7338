"""Contract: the whole BLADE path (ASA installed first, then the LoRA, 8-step blade sampler, no CFG) with every
attention block kept gives the same video latents as the dense pipeline with the same LoRA (fp32, <= 1e-5), for
both families; with a sparse ASA setting it differs (so the comparison can fail)."""

from __future__ import annotations

import pytest
import torch

from blade_ops.attention import ASAConfig
from blade_ops.lora import apply_lora, save_lora
from blade_ops.models import load_model_bundle
from blade_ops.models.tiny import tiny_video_size
from blade_ops.pipeline import generate, prepare_model, preset_request

ALL_KEPT = ASAConfig(block_size=16, num_keep=4, tau=1.0, min_ratio=1.0, max_ratio=1.0, sample_gap=4)
SPARSE = ASAConfig(block_size=16, num_keep=4, tau=0.5, min_ratio=0.2, max_ratio=0.3, sample_gap=4)


def _random_lora(transformer: torch.nn.Module, path) -> str:
    """A rank-4 LoRA on every attention projection, large enough to change the video, in BLADE's file format."""
    g = torch.Generator().manual_seed(1)
    state = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith((".to_q", ".to_k", ".to_v", ".to_out.0")):
            state[f"{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=g) * 0.3
            state[f"{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=g) * 0.3
    return str(save_lora(path / "lora.safetensors", state, {"rank": 4, "alpha": 4.0}))


@pytest.mark.parametrize("family", ["wan", "cogvideox"])
def test_blade_with_every_block_kept_equals_dense_with_the_lora(family, tiny_folder, tmp_path):
    def latents(asa: ASAConfig | None, lora: str | None) -> torch.Tensor:
        bundle = load_model_bundle(tiny_folder(family), dtype=torch.float32)
        if asa is None:
            apply_lora(bundle.transformer, lora)
        else:
            prepare_model(bundle, "blade", lora=lora, asa_config=asa, backend="torch")
        prompts = ["a red ball", "a blue box"]
        request = preset_request("blade", bundle.family, prompts, seed=3, **tiny_video_size(family))
        return generate(bundle, request, device="cpu", output_latents_only=True).latents

    lora = _random_lora(load_model_bundle(tiny_folder(family), parts=("transformer",)).transformer, tmp_path)
    dense = latents(None, lora)
    blade = latents(ALL_KEPT, lora)
    assert torch.isfinite(blade).all()
    assert (blade - dense).abs().max().item() <= 1e-5
    sparse = latents(SPARSE, lora)
    assert (sparse - dense).abs().max().item() > 1e-3
