"""Contract: the backend registry resolves names (auto: flex on CUDA, torch on CPU), refuses missing kernels
with a RuntimeError naming the package and how to get it (never a silent dense fallback), and every backend
computes the same block-sparse attention and log-sum-exp as the torch oracle, tails and key biases included."""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest
import torch

from blade_ops.attention import backends as backends_mod
from blade_ops.attention.backends import BACKENDS, KVBias, auto_order, available_backends, get_backend, resolve_backend
from blade_ops.attention.backends.torch_backend import expand_block_mask


def _naive(q, k, v, mask, bs, scale, bias=None):
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    if bias is not None:
        s = s + bias.double()
    s = s.masked_fill(~expand_block_mask(mask, bs, q.shape[2], k.shape[2]), -math.inf)
    return torch.softmax(s, -1) @ v.double(), torch.logsumexp(s, -1)


def _inputs(b, h, lq, lk, d, bs, density=0.4, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g) for n in (lq, lk, lk))
    mask = torch.rand(b, h, -(-lq // bs), -(-lk // bs), generator=g) < density
    mask[..., 0] = True
    if grad:
        q, k, v = (x.requires_grad_() for x in (q, k, v))
    return q, k, v, mask


def test_registry():
    assert {"torch", "flex", "block_sparse_attn"} <= set(BACKENDS)
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("torch", "cpu") == "torch"
    assert "torch" in available_backends("cpu")
    with pytest.raises(ValueError, match="Unknown attention backend 'sage'"):
        get_backend("sage")


def test_auto_order_follows_the_measured_table(monkeypatch):
    assert auto_order("cpu", 128) == ("torch",)
    monkeypatch.setattr(backends_mod, "AUTO_MEASURED_FWD_MS", {})
    assert auto_order("cuda", 128) == auto_order("cuda") == ("flex", "block_sparse_attn", "torch")
    table = {128: {"flex": 2.0, "block_sparse_attn": 1.5}, 64: {"flex": 1.0, "block_sparse_attn": 1.2}}
    monkeypatch.setattr(backends_mod, "AUTO_MEASURED_FWD_MS", table)
    assert auto_order("cuda", 128) == ("block_sparse_attn", "flex", "torch")
    assert auto_order("cuda", 64) == ("flex", "block_sparse_attn", "torch")
    assert auto_order("cuda", 96) == auto_order("cuda") == ("flex", "block_sparse_attn", "torch")  # no single winner
    table[64]["block_sparse_attn"] = 0.9
    assert auto_order("cuda") == ("block_sparse_attn", "flex", "torch")  # the winner at every measured head dim


def test_auto_takes_the_faster_installed_backend_and_logs_it(monkeypatch, caplog):
    monkeypatch.setattr(backends_mod, "AUTO_MEASURED_FWD_MS", {128: {"flex": 2.0, "block_sparse_attn": 1.5}})
    monkeypatch.setattr(backends_mod, "_AUTO_LOGGED", set())
    if not BACKENDS["flex"].available:
        pytest.skip("FlexAttention needs torch >= 2.5")
    missing = dataclasses.replace(BACKENDS["block_sparse_attn"], available=False)
    monkeypatch.setitem(BACKENDS, "block_sparse_attn", missing)
    assert resolve_backend("auto", "cuda", 128) == "flex"  # the faster one is absent: the next installed one
    monkeypatch.setitem(BACKENDS, "block_sparse_attn", dataclasses.replace(missing, available=True))
    with caplog.at_level(logging.INFO, logger="blade_ops.attention.backends"):
        assert resolve_backend("auto", "cuda", 128) == "block_sparse_attn"
        assert resolve_backend("auto", "cuda", 128) == "block_sparse_attn"
    lines = [r.getMessage() for r in caplog.records if "block_sparse_attn" in r.getMessage()]
    assert lines == ["ASA attention backend 'auto' -> 'block_sparse_attn' on cuda, head_dim 128 "
                     f"(installed: {available_backends('cuda')})"]  # once per device type and head dim


@pytest.mark.skipif(BACKENDS["block_sparse_attn"].available, reason="block_sparse_attn is installed here")
def test_missing_backend_error_names_package_and_install():
    with pytest.raises(RuntimeError) as err:
        get_backend("block_sparse_attn")
    msg = str(err.value)
    assert "block_sparse_attn" in msg and "https://github.com/mit-han-lab/Block-Sparse-Attention" in msg
    assert "never falls back to dense" in msg
    with pytest.raises(RuntimeError, match="block_sparse_attn"):
        resolve_backend("block_sparse_attn", "cpu")


def test_block_sparse_attn_is_cuda_only():
    assert BACKENDS["block_sparse_attn"].devices == ("cuda",)


@pytest.mark.parametrize("lq, lk, bs", [(64, 64, 16), (75, 75, 16), (300, 300, 128), (50, 83, 32)])
def test_torch_backend_matches_naive(lq, lk, bs):
    q, k, v, mask = _inputs(2, 2, lq, lk, 8, bs)
    out, lse = get_backend("torch").fn(q, k, v, mask, bs, 0.3)
    ref_out, ref_lse = _naive(q, k, v, mask, bs, 0.3)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-5, rtol=1e-5)


def test_kv_bias():
    q, k, v, mask = _inputs(1, 2, 40, 40, 8, 16)
    bias = KVBias(((5, 9, float("-inf")), (30, 40, math.log(3.0))))
    out, lse = get_backend("torch").fn(q, k, v, mask, 16, 0.3, kv_bias=bias)
    ref_out, ref_lse = _naive(q, k, v, mask, 16, 0.3, bias.to_tensor(40, "cpu"))
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lq, lk, bs", [(64, 64, 16), (75, 75, 16), (200, 200, 128), (45, 77, 16)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_flex_matches_torch(lq, lk, bs, with_bias):
    q, k, v, mask = _inputs(2, 2, lq, lk, 16, bs, seed=lq)
    bias = KVBias(((lk - 7, lk - 3, float("-inf")), (lk - 3, lk, 1.1))) if with_bias else None
    o1, l1 = get_backend("torch").fn(q, k, v, mask, bs, 0.25, kv_bias=bias)
    o2, l2 = get_backend("flex").fn(q, k, v, mask, bs, 0.25, kv_bias=bias)
    assert torch.isfinite(o2).all() and torch.isfinite(l2).all()
    torch.testing.assert_close(o2, o1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(l2, l1, atol=1e-5, rtol=1e-5)


def test_flex_cpu_backward_is_an_error():
    q, k, v, mask = _inputs(1, 1, 32, 32, 16, 16, grad=True)
    with pytest.raises(RuntimeError, match="no backward pass on CPU"):
        get_backend("flex").fn(q, k, v, mask, 16, 0.25)


def test_torch_backend_gradients_match_naive():
    q, k, v, mask = _inputs(1, 2, 40, 40, 8, 16, grad=True)
    out, lse = get_backend("torch").fn(q, k, v, mask, 16, 0.3)
    g = torch.autograd.grad((out.sum() + lse.sum()), (q, k, v))
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    ro, rl = _naive(qd, kd, vd, mask, 16, 0.3)
    rg = torch.autograd.grad(ro.sum() + rl.sum(), (qd, kd, vd))
    for a, b in zip(g, rg, strict=True):
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("lq, bs, d", [(1000, 128, 64), (384, 128, 128)])
def test_flex_cuda_forward_backward_matches_torch(lq, bs, d):
    q, k, v, mask = _inputs(2, 2, lq, lq, d, bs)
    q, k, v = (x.cuda().requires_grad_() for x in (q, k, v))
    mask = mask.cuda()
    bias = KVBias(((lq - 100, lq, 0.7),))
    for kv_bias in (None, bias):
        o1, l1 = get_backend("torch").fn(q, k, v, mask, bs, 0.125, kv_bias=kv_bias)
        o2, l2 = get_backend("flex").fn(q, k, v, mask, bs, 0.125, kv_bias=kv_bias)
        g = torch.randn_like(o1)
        g1 = torch.autograd.grad(o1, (q, k, v), g)
        g2 = torch.autograd.grad(o2, (q, k, v), g)
        torch.testing.assert_close(o2, o1, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(l2, l1, atol=2e-3, rtol=2e-3)
        for a, b in zip(g2, g1, strict=True):
            torch.testing.assert_close(a, b, atol=5e-3, rtol=5e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not BACKENDS["block_sparse_attn"].available, reason="block_sparse_attn not installed")
def test_block_sparse_attn_matches_torch():
    q, k, v, mask = _inputs(2, 2, 1000, 1000, 64, 128)
    q, k, v = (x.cuda().half().requires_grad_() for x in (q, k, v))
    mask = mask.cuda()
    o1, l1 = get_backend("torch").fn(q, k, v, mask, 128, 0.125)
    o2, l2 = get_backend("block_sparse_attn").fn(q, k, v, mask, 128, 0.125)
    torch.testing.assert_close(o2.float(), o1.float(), atol=5e-3, rtol=5e-3)
    torch.testing.assert_close(l2, l1, atol=5e-3, rtol=5e-3)
    g = torch.randn_like(o1)
    for a, b in zip(torch.autograd.grad(o2, (q, k, v), g), torch.autograd.grad(o1, (q, k, v), g), strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)


def _lists(bm, side):
    names = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices")
    if side == "q":
        names = ("q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices")
    return tuple(getattr(bm, n) for n in names)


def _dense_from_lists(num, idx, n):
    """[..., R] counts and [..., R, C] lists -> [..., R, n] bool (the first count columns of each list)."""
    keep = torch.arange(idx.shape[-1], device=idx.device) < num.unsqueeze(-1)
    out = torch.zeros(*idx.shape[:-1], n, dtype=torch.bool, device=idx.device)
    return out.scatter_(-1, idx.long(), keep)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_flex_block_lists_describe_the_mask(device):
    """Full + partial lists rebuild the mask on both sides; partial = the tail block and blocks of masked ranges."""
    from blade_ops.attention.backends.flex import _mods, build_flex_block_mask

    g = torch.Generator().manual_seed(4)
    mask = (torch.rand(2, 3, 8, 11, generator=g) < 0.4).to(device)
    mask[..., -2:] = True
    len_k = 11 * 16 - 3
    mask_mod, _, masked = _mods(len_k, KVBias(((100, 120, float("-inf")),)))
    bm = build_flex_block_mask(mask, 16, 8 * 16, len_k, mask_mod, masked, with_backward=True)
    partial_cols = torch.zeros(11, dtype=torch.bool, device=device)
    partial_cols[[6, 7, 10]] = True  # keys 100-119 touch blocks 6 and 7; block 10 holds the tail
    kv_part, kv_full = _dense_from_lists(*_lists(bm, "kv")[:2], 11), _dense_from_lists(*_lists(bm, "kv")[2:], 11)
    assert torch.equal(kv_part, mask & partial_cols) and torch.equal(kv_full, mask & ~partial_cols)
    q_part, q_full = _dense_from_lists(*_lists(bm, "q")[:2], 8), _dense_from_lists(*_lists(bm, "q")[2:], 8)
    assert torch.equal(q_part.transpose(-1, -2), kv_part) and torch.equal(q_full.transpose(-1, -2), kv_full)
    for num, idx in (_lists(bm, "kv")[:2], _lists(bm, "q")[2:]):  # kept blocks first, ascending
        assert num.dtype == torch.int32 and idx.dtype == torch.int32
        rank = torch.arange(idx.shape[-1], device=idx.device)
        kept = rank < num.unsqueeze(-1)
        steps = (idx[..., 1:] > idx[..., :-1]) | ~kept[..., 1:]
        assert steps.all()


@pytest.mark.gpu
def test_flex_cuda_block_lists_equal_sorted_lists():
    """The Triton prefix-sum lists are bit-identical to the stable sorts of the CPU path."""
    from blade_ops.attention.backends import flex

    mask = torch.rand(2, 12, 256, 265, device="cuda") < 0.1
    mask[..., 256:] = True
    len_k = 256 * 128 + 1092
    mask_mod, _, masked = flex._mods(len_k, KVBias(((32760, 32768, float("-inf")),)))
    fast = flex.build_flex_block_mask(mask, 128, 32760, len_k, mask_mod, masked, with_backward=True)
    slow = flex.build_flex_block_mask(mask.cpu(), 128, 32760, len_k, mask_mod, masked, with_backward=True)
    for side in ("kv", "q"):
        for a, b in zip(_lists(fast, side), _lists(slow, side), strict=True):
            assert torch.equal(a.cpu(), b)
