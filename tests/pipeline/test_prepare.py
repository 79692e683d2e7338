"""One rule for a run's ASA settings (request vs the settings a BLADE LoRA records) and one function that puts ASA
and the LoRAs on a transformer and takes exactly that off again, also when a step fails."""

from __future__ import annotations

import logging

import pytest
import torch

from blade_ops.attention import ASAConfig, get_asa_handle
from blade_ops.lora import applied_loras, lora_from_state_dict
from blade_ops.prepare import AsaRequest, prepare_transformer, prepared_transformer, resolve_asa_config

RECORDED = {"tau": 0.8, "min_ratio": 0.1, "max_ratio": 0.3, "num_keep": 16, "sample_gap": 12, "dense_steps": 5}
RUN = dict(dense_steps=2, dense_layers=(1,), estimate_precision="bf16")


@pytest.mark.parametrize("source, recorded, expect_origin, expect_max", [
    ("lora", [None, RECORDED], "LoRA #2's metadata", 0.3),
    ("lora", [None], "wan paper settings", 0.17),
    ("family", [RECORDED], "wan paper settings", 0.17),
    ("custom", [RECORDED], "custom settings", 0.5),
])
def test_resolve_asa_config(source, recorded, expect_origin, expect_max, caplog):
    request = AsaRequest("wan", ASAConfig(max_ratio=0.5, **RUN), "torch", source=source)
    with caplog.at_level(logging.WARNING):
        config, origin = resolve_asa_config(request, recorded)
    assert origin == expect_origin and config.max_ratio == expect_max
    # where the run goes dense and the estimate precision are always the request's, never the LoRA's
    assert (config.dense_steps, config.dense_layers, config.estimate_precision) == (2, (1,), "bf16")
    differs = any(recorded) and origin != "LoRA #2's metadata"
    assert bool([r for r in caplog.records if "was distilled with ASA settings" in r.getMessage()]) == differs


def test_request_is_validated():
    with pytest.raises(ValueError, match="source .lora's. is not one of"):
        AsaRequest("wan", ASAConfig(), source="lora's")
    with pytest.raises(ValueError, match="Unknown model family 'sd15'"):
        AsaRequest("sd15", ASAConfig())


def _lora(transformer, scale=0.05, bad_module=False):
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(".attn1.to_q"):
            state[f"{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=g) * scale
            state[f"{name}.lora_B.weight"] = torch.randn(module.out_features, 2, generator=g) * scale
    if bad_module:
        state["blocks.0.attn1.nowhere.lora_A.weight"] = torch.zeros(2, 4)
        state["blocks.0.attn1.nowhere.lora_B.weight"] = torch.zeros(4, 2)
    return lora_from_state_dict(state, {"blade.asa": '{"max_ratio": 0.3, "min_ratio": 0.1}'})


def test_prepare_then_undo_restores_the_transformer(tiny_bundle):
    transformer = tiny_bundle("wan").transformer
    processors = dict(transformer.attn_processors)
    request = AsaRequest("wan", ASAConfig.for_family("wan"), "torch")
    with prepared_transformer(transformer, asa=request, loras=[(_lora(transformer), 0.5)]) as prepared:
        assert prepared.asa_origin == "LoRA #1's metadata" and prepared.asa_handle.config.max_ratio == 0.3
        assert get_asa_handle(transformer) is prepared.asa_handle and len(applied_loras(transformer)) == 1
    assert get_asa_handle(transformer) is None and not applied_loras(transformer)
    assert dict(transformer.attn_processors) == processors


def test_a_failing_lora_takes_asa_off_again(tiny_bundle):
    transformer = tiny_bundle("wan").transformer
    request = AsaRequest("wan", ASAConfig.for_family("wan"), "torch")
    with pytest.raises(ValueError):
        prepare_transformer(transformer, asa=request, loras=[(_lora(transformer, bad_module=True), 1.0)])
    assert get_asa_handle(transformer) is None and not applied_loras(transformer)
