"""Contract: ASAConfig validates every field with a ValueError naming the value and the valid range, carries
the per-family presets, rounds its block clamps up (at least one block) and round-trips through a dict."""

from __future__ import annotations

import json

import pytest

from blade_ops.attention import ASAConfig


def test_defaults_and_presets():
    c = ASAConfig()
    assert (c.block_size, c.tau, c.num_keep, c.dense_steps, c.dense_layers, c.reorder) == (128, 0.95, 32, 0, (), True)
    wan = ASAConfig.for_family("wan")
    assert (wan.min_ratio, wan.max_ratio, wan.sample_gap) == (0.05, 0.17, 30)
    cog = ASAConfig.for_family("CogVideoX-5b")
    assert (cog.min_ratio, cog.max_ratio, cog.sample_gap) == (0.05, 0.10, 15)
    assert ASAConfig.for_family("wan", num_keep=16).num_keep == 16
    with pytest.raises(ValueError, match="valid families"):
        ASAConfig.for_family("hunyuan")


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"block_size": 100}, "block_size=100"),
        ({"tau": 0.0}, r"tau=0.0 must be in \(0, 1\]"),
        ({"tau": 1.5}, "tau=1.5"),
        ({"min_ratio": 0.3, "max_ratio": 0.2}, "min_ratio=0.3 must be <= max_ratio=0.2"),
        ({"max_ratio": 0.0}, "max_ratio=0.0"),
        ({"num_keep": 0}, r"num_keep=0 must be an integer in \[1, block_size=128\]"),
        ({"num_keep": 200}, "num_keep=200"),
        ({"sample_gap": 0}, "sample_gap=0"),
        ({"dense_steps": -1}, "dense_steps=-1"),
        ({"dense_layers": (1, -2)}, "dense_layers"),
        ({"use_global": 1}, "use_global=1"),
        ({"global_mode": "both"}, "global_mode='both'"),
        ({"estimate_precision": "fp16"}, "estimate_precision='fp16' is not one of"),
        ({"estimate_tokens": "mean"}, "estimate_tokens='mean' is not one of"),
        ({"estimate_tokens": "pooled", "num_keep": 24}, "num_keep to divide block_size=128; got num_keep=24"),
    ],
)
def test_validation(kwargs, text):
    with pytest.raises(ValueError, match=text):
        ASAConfig(**kwargs)


def test_frozen_and_dense_layers_normalised():
    c = ASAConfig(dense_layers=[3, 1, 3])
    assert c.dense_layers == (1, 3)
    with pytest.raises(AttributeError):
        c.tau = 0.5


def test_block_clamps_round_up():
    c = ASAConfig(min_ratio=0.05, max_ratio=0.17)
    assert (c.min_blocks(256), c.max_blocks(256)) == (13, 44)  # ceil(12.8), ceil(43.52)
    assert (c.min_blocks(3), c.max_blocks(3)) == (1, 1)
    assert (c.min_blocks(10), c.max_blocks(10)) == (1, 2)
    full = ASAConfig(min_ratio=1.0, max_ratio=1.0)
    assert (full.min_blocks(7), full.max_blocks(7)) == (7, 7)


def test_dict_round_trip():
    c = ASAConfig.for_family("cogvideox", dense_layers=(0, 5), dense_steps=2)
    d = json.loads(json.dumps(c.to_dict()))
    assert ASAConfig.from_dict(d) == c
    with pytest.raises(ValueError, match="Unknown ASAConfig keys"):
        ASAConfig.from_dict({**d, "topk": 3})


def test_estimate_precisions_match_the_estimate():
    from blade_ops.attention import config, estimate

    assert config.ESTIMATE_PRECISIONS == estimate.ESTIMATE_PRECISIONS
    assert ASAConfig().estimate_precision == "auto"
    assert ASAConfig.from_dict(ASAConfig(estimate_precision="bf16").to_dict()).estimate_precision == "bf16"
