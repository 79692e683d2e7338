"""Contract: the whole BLADE path (ASA installed first, then the LoRA, 8-step blade sampler, no CFG) with every
attention block kept gives the same video latents as the dense pipeline with the same LoRA (fp32, <= 1e-5), for
both families; with a sparse ASA setting it differs (so the comparison can fail)."""

from __future__ import annotations

import pytest
import torch

from blade_ops.attention import ASAConfig
from blade_ops.lora import apply_lora
from blade_ops.models import load_model_bundle
from blade_ops.models.tiny import tiny_video_size
from blade_ops.pipeline import generate, prepare_model, preset_request
from tests.common import ALL_KEPT, SPARSE, attention_lora


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

    lora = attention_lora(load_model_bundle(tiny_folder(family), parts=("transformer",)).transformer, tmp_path)
    dense = latents(None, lora)
    blade = latents(ALL_KEPT, lora)
    assert torch.isfinite(blade).all()
    assert (blade - dense).abs().max().item() <= 1e-5
    sparse = latents(SPARSE, lora)
    assert (sparse - dense).abs().max().item() > 1e-3
