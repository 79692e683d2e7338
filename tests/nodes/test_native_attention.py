"""The attention override for ComfyUI's own Wan models, called the way core calls it (no ComfyUI needed):
ASA for the self-attention calls it can take, the previous override for every other call, the reason counted."""

from __future__ import annotations

import math

import pytest
import torch


@pytest.fixture(scope="module")
def native(pack):
    from blade_pack.nodes import native_attention

    return native_attention


@pytest.fixture(scope="module")
def prepare(pack):
    from blade_pack.blade_ops import prepare

    return prepare


GRID = (2, 8, 16)  # 256 tokens: two 128-token blocks
HEADS, DIM = 2, 16


def _request(prepare, source="custom", **config):
    from blade_pack.blade_ops.attention.config import ASAConfig

    base = dict(block_size=128, num_keep=8, min_ratio=1.0, max_ratio=1.0, use_global=False)
    return prepare.AsaRequest("wan", ASAConfig(**{**base, **config}), "torch", source=source)


class Recorder:
    """A stand-in for the override below ours (or core's function): records each call, returns a marker."""

    def __init__(self):
        self.calls = []

    def __call__(self, func, q, k, v, heads, **kwargs):
        self.calls.append((q.shape[1] if not kwargs.get("skip_reshape") else q.shape[2], k.shape, kwargs))
        return torch.full_like(q, 7.0)


def _qkv(tokens=256, kv_tokens=None, seed=0, layout="bnd"):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, tokens, HEADS * DIM, generator=g)
    k = torch.randn(1, kv_tokens or tokens, HEADS * DIM, generator=g)
    v = torch.randn(1, kv_tokens or tokens, HEADS * DIM, generator=g)
    if layout == "bhnd":
        q, k, v = (t.view(1, -1, HEADS, DIM).transpose(1, 2) for t in (q, k, v))
    return q, k, v


def _setup(native, prepare, start=0.0, end=1.0, **config):
    state = native.NativeASAState(_request(prepare, **config), start, end)
    previous = Recorder()
    options = {"optimized_attention_override": previous}
    native.put_on_top(state, options)
    state.enter_forward(GRID)
    return state, previous, options["optimized_attention_override"]


def test_self_attention_goes_through_asa_and_matches_dense(native, prepare):
    state, previous, override = _setup(native, prepare)
    q, k, v = _qkv()
    out = override(None, q, k, v, heads=HEADS, transformer_options={})
    heads_first = [t.view(1, -1, HEADS, DIM).transpose(1, 2) for t in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*heads_first)
    assert previous.calls == [] and state.stats.calls == 1
    torch.testing.assert_close(out, ref.transpose(1, 2).reshape(1, -1, HEADS * DIM), atol=1e-5, rtol=1e-5)


def test_skip_reshape_layout(native, prepare):
    _, _, override = _setup(native, prepare)
    q, k, v = _qkv(layout="bhnd")
    out = override(None, q, k, v, heads=HEADS, skip_reshape=True, skip_output_reshape=True, transformer_options={})
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert out.shape == q.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["cross", "mask", "grid", "scale", "no_grid"])
def test_calls_asa_cannot_take_go_to_the_previous_override(native, prepare, case, caplog):
    state, previous, override = _setup(native, prepare)
    kwargs = {"transformer_options": {}}
    q, k, v = _qkv(kv_tokens=12 if case == "cross" else None)
    if case == "mask":
        kwargs["mask"] = torch.zeros(1, 256, 256)
    if case == "grid":
        q, k, v = _qkv(tokens=300)
    if case == "scale":
        kwargs["scale"] = 0.5
    if case == "no_grid":
        state.exit_forward((None, 0))
    with caplog.at_level("INFO"):
        out = override(None, q, k, v, heads=HEADS, **kwargs)
        override(None, q, k, v, heads=HEADS, **kwargs)
    assert len(previous.calls) == 2 and bool((out == 7.0).all()) and state.stats.calls == 0
    reasons = [r.getMessage() for r in caplog.records if "previous attention" in r.getMessage()]
    assert len(reasons) == (0 if case == "cross" else 1)  # logged once; cross-attention is routine, not logged


def test_no_previous_override_calls_cores_function(native, prepare):
    state = native.NativeASAState(_request(prepare), 0.0, 1.0)
    options = {}
    native.put_on_top(state, options)
    seen = []
    q, k, v = _qkv(kv_tokens=12)
    options["optimized_attention_override"](
        lambda *a, **kw: seen.append((a[3], sorted(kw))) or "core", q, k, v, heads=HEADS, transformer_options={}
    )
    assert seen == [(HEADS, ["attn_precision", "mask", "skip_output_reshape", "skip_reshape", "transformer_options"])]


def test_dense_blocks_follow_core_block_index_or_call_order(native, prepare):
    state, previous, override = _setup(native, prepare, dense_layers=(1,))
    q, k, v = _qkv()
    for _ in range(3):  # no block_index from core (ComfyUI a125cd8): the call order within the forward counts
        override(None, q, k, v, heads=HEADS, transformer_options={})
    assert len(previous.calls) == 1 and state.stats.calls == 2
    override(None, q, k, v, heads=HEADS, transformer_options={"block_index": 1})  # newer core says which block
    assert len(previous.calls) == 2 and state.dense_calls["in dense_blocks"] == 2


def test_sigma_window_and_dense_steps(native, prepare):
    class Flow:  # ComfyUI's flow model_sampling with shift 1: percent p -> sigma 1 - p
        def percent_to_sigma(self, p):
            return 1.0 - p

    state, previous, override = _setup(native, prepare, start=0.25, end=1.0, dense_steps=1)
    state.begin_run(Flow())
    state.enter_forward(GRID)
    q, k, v = _qkv()
    schedule = torch.tensor([0.9, 0.7, 0.5, 0.0])
    for sigma in (0.9, 0.7, 0.5):
        options = {"sigmas": torch.tensor([sigma]), "sample_sigmas": schedule}
        override(None, q, k, v, heads=HEADS, transformer_options=options)
    assert state.dense_calls == {"outside the start/end percent window": 1} and state.stats.calls == 2
    state.enter_forward(GRID)
    options = {"sigmas": torch.tensor([0.74]), "sample_sigmas": schedule}
    override(None, q, k, v, heads=HEADS, transformer_options=options)
    assert state.dense_calls["within dense_steps"] == 0  # 0.74 is step 1 (nearest 0.7)
    report = state.end_run()
    assert report.sparse_calls == 3 and report.dense_calls == {"outside the start/end percent window": 1}
    assert math.isclose(report.mean_density, 1.0)


def test_put_on_top_is_idempotent_and_replaces_another_blade_asa(native, prepare):
    state, previous, _ = _setup(native, prepare)
    options = {"optimized_attention_override": previous}
    native.put_on_top(state, options)
    first = options["optimized_attention_override"]
    native.put_on_top(state, options)
    assert options["optimized_attention_override"] is first
    other = native.NativeASAState(_request(prepare), 0.0, 1.0)
    native.put_on_top(other, options)  # a second BLADE ASA node replaces the first, the one below stays below
    top = options["optimized_attention_override"]
    assert top.blade_asa_state is other and top.blade_previous is previous
    later = Recorder()
    options["optimized_attention_override"] = later  # a node applied later replaced ours...
    native.put_on_top(other, options)  # ...the per-step re-install puts ASA back on top of it
    assert options["optimized_attention_override"].blade_previous is later


def test_lora_settings_in_transformer_options_decide_the_config(native, prepare):
    state, _, override = _setup(native, prepare, source="lora", min_ratio=0.5)
    q, k, v = _qkv()
    recorded = {"tau": 0.5, "min_ratio": 0.5, "max_ratio": 0.5, "sample_gap": 7, "num_keep": 8}
    override(None, q, k, v, heads=HEADS, transformer_options={native.LORA_SETTINGS_KEY: [None, recorded]})
    assert state.end_run().settings_origin == "LoRA #2's metadata"
    config = state.config_for({native.LORA_SETTINGS_KEY: [None, recorded]})
    assert (config.tau, config.sample_gap, config.block_size) == (0.5, 7, 128)


def test_video_grid_pads_like_core(native):
    x = torch.zeros(1, 16, 5, 9, 17)
    assert native.video_grid(x, (1, 2, 2)) == (5, 5, 9)
    assert native.video_grid(x, (1, 2, 2), torch.zeros(1, 16, 2, 9, 17)) == (7, 5, 9)
    with pytest.raises(ValueError, match=r"\[B, C, T, H, W\]"):
        native.video_grid(torch.zeros(1, 16, 9, 17), (1, 2, 2))
