"""Contract of the ``block_sparse_attn`` backend without the CUDA library: argument translation, mask layouts, the
differentiable LSE, and ASA through the backend, against a pure-torch stand-in of the library's two kernel entry
points (written here from their contract: packed varlen q/k/v, head_mask_type, descending -1-padded block lists,
a backward that reads the output only through D = rowsum(dO * O)). The same checks against the real library run
on a GPU in test_block_sparse_gpu.py."""

from __future__ import annotations

import dataclasses
import math
import sys
import types

import pytest
import torch

from blade_ops.attention import ASAConfig, asa_attention
from blade_ops.attention.backends import BACKENDS, KVBias
from blade_ops.attention.backends.block_sparse import descending_block_lists, pack, unpack
from blade_ops.attention.backends.torch_backend import expand_block_mask

CALLS: list[str] = []


def _decode(lists: torch.Tensor, n: int) -> torch.Tensor:
    """[..., R, C] kept indices (strictly descending, then -1 only) -> [..., R, n] bool; checks the layout."""
    valid = lists >= 0
    assert lists.dtype == torch.int32 and lists.is_contiguous()
    assert bool((valid[..., 1:] <= valid[..., :-1]).all()), "a -1 before a kept index"
    assert bool(((lists[..., 1:] < lists[..., :-1]) | ~valid[..., 1:]).all()), "kept indices not descending"
    out = torch.zeros(*lists.shape[:-1], n + 1, dtype=torch.bool)
    out.scatter_(-1, torch.where(valid, lists, n).long(), True)
    return out[..., :n]


def _segments(cu: torch.Tensor) -> list[tuple[int, int]]:
    assert cu.dtype == torch.int32 and cu.dim() == 1
    return [(int(cu[i]), int(cu[i + 1])) for i in range(cu.numel() - 1)]


def _check_common(q, k, v, cu_q, cu_k, m_dim, n_dim, head_mask_type, streaming_info, p_dropout, causal):
    assert q.dtype in (torch.float16, torch.bfloat16) and k.dtype == v.dtype == q.dtype
    assert q.dim() == 3 and q.shape[2] % 8 == 0 and q.shape[2] <= 128
    assert (m_dim, n_dim) == (128, 128) and p_dropout == 0.0 and causal is False
    assert head_mask_type.dtype == torch.int32 and head_mask_type.shape == (q.shape[1],)
    assert streaming_info.dtype == torch.int32 and streaming_info.shape == (2 * q.shape[1],)
    assert cu_q.numel() == cu_k.numel() and int(cu_q[-1]) == q.shape[0] and int(cu_k[-1]) == k.shape[0]


def _scores(q, k, seg_q, seg_k, scale):
    """[H, Lq, Lk] float64 scores of one sequence."""
    qs, ks = q[seg_q[0] : seg_q[1]].double(), k[seg_k[0] : seg_k[1]].double()
    return torch.einsum("qhd,khd->hqk", qs, ks) * scale


def _token_mask(block_rows, head_mask_type, lq, lk):
    """Per attention head the [Lq, Lk] token mask from the block rows of its mask head (head_mask_type - 1)."""
    heads = head_mask_type.long() - 1
    assert bool((heads >= 0).all()), "every head must be block-sparse"
    return expand_block_mask(block_rows[heads].unsqueeze(0), 128, lq, lk)[0]


def fake_forward(q, k, v, cu_q, cu_k, m_dim, n_dim, head_mask_type, streaming_info, row_blockmask, max_q, max_k,
                 p_dropout, scale, causal, exact_streaming, return_softmax, left, right):
    CALLS.append("fwd")
    _check_common(q, k, v, cu_q, cu_k, m_dim, n_dim, head_mask_type, streaming_info, p_dropout, causal)
    assert exact_streaming is False and return_softmax is False and (left, right) == (-1, -1)
    b = cu_q.numel() - 1
    assert row_blockmask.shape == (b, q.shape[1], -(-max_q // 128), -(-max_k // 128))
    rows = _decode(row_blockmask, row_blockmask.shape[-1])
    out = torch.empty_like(q)
    lse = torch.full((b, q.shape[1], max_q), math.inf, dtype=torch.float32)
    for i, (sq, sk) in enumerate(zip(_segments(cu_q), _segments(cu_k), strict=True)):
        s = _scores(q, k, sq, sk, scale)
        s = s.masked_fill(~_token_mask(rows[i], head_mask_type, sq[1] - sq[0], sk[1] - sk[0]), -math.inf)
        lse_i = torch.logsumexp(s, -1)
        o = torch.einsum("hqk,khd->qhd", torch.exp(s - lse_i.unsqueeze(-1)), v[sk[0] : sk[1]].double())
        out[sq[0] : sq[1]] = o.to(q.dtype)
        lse[i, :, : sq[1] - sq[0]] = lse_i.float()
    return out, lse, torch.empty(0, dtype=q.dtype), torch.zeros(2, dtype=torch.int64)


def fake_backward(dout, q, k, v, out, lse, dq, dk, dv, cu_q, cu_k, m_dim, n_dim, head_mask_type, streaming_info,
                  col_blockmask, max_q, max_k, p_dropout, scale, zero_tensors, causal, left, right, deterministic,
                  rng_state=None):
    CALLS.append("bwd")
    _check_common(q, k, v, cu_q, cu_k, m_dim, n_dim, head_mask_type, streaming_info, p_dropout, causal)
    assert dout.dtype == out.dtype == q.dtype and dout.shape == out.shape == q.shape
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    b = cu_q.numel() - 1
    assert col_blockmask.shape == (b, q.shape[1], -(-max_k // 128), -(-max_q // 128))
    rows = _decode(col_blockmask, col_blockmask.shape[-1]).transpose(-1, -2)
    for i, (sq, sk) in enumerate(zip(_segments(cu_q), _segments(cu_k), strict=True)):
        keep = _token_mask(rows[i], head_mask_type, sq[1] - sq[0], sk[1] - sk[0])
        s = _scores(q, k, sq, sk, scale)
        p = torch.exp(s - lse[i, :, : sq[1] - sq[0]].double().unsqueeze(-1)) * keep
        do, o = dout[sq[0] : sq[1]].double(), out[sq[0] : sq[1]].double()
        dp = torch.einsum("qhd,khd->hqk", do, v[sk[0] : sk[1]].double())
        d_sum = (do * o).sum(-1).transpose(0, 1)  # the only use of `out`: D = rowsum(dO * O)
        ds = p * (dp - d_sum.unsqueeze(-1))
        dq[sq[0] : sq[1]] = (torch.einsum("hqk,khd->qhd", ds, k[sk[0] : sk[1]].double()) * scale).to(dq.dtype)
        dk[sk[0] : sk[1]] = (torch.einsum("hqk,qhd->khd", ds, q[sq[0] : sq[1]].double()) * scale).to(dk.dtype)
        dv[sk[0] : sk[1]] = torch.einsum("hqk,qhd->khd", p, do).to(dv.dtype)
    return torch.zeros(b, q.shape[1], -(-max_q // 128) * 128)


@pytest.fixture
def standin(monkeypatch):
    """The stand-in installed as the `block_sparse_attn` package, and the backend marked available on CPU too."""
    pkg = types.ModuleType("block_sparse_attn")
    iface = types.ModuleType("block_sparse_attn.block_sparse_attn_interface")
    iface._wrapped_block_sparse_attn_forward = fake_forward
    iface._wrapped_block_sparse_attn_backward = fake_backward
    pkg.block_sparse_attn_interface = iface
    monkeypatch.setitem(sys.modules, "block_sparse_attn", pkg)
    monkeypatch.setitem(sys.modules, "block_sparse_attn.block_sparse_attn_interface", iface)
    entry = dataclasses.replace(BACKENDS["block_sparse_attn"], available=True, devices=("cpu", "cuda"))
    monkeypatch.setitem(BACKENDS, "block_sparse_attn", entry)
    CALLS.clear()
    return entry


def _inputs(b, h, lq, lk, d, dtype, density=0.35, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g).to(dtype) for n in (lq, lk, lk))
    mask = torch.rand(b, h, -(-lq // 128), -(-lk // 128), generator=g) < density
    mask[..., -1] = True  # every row keeps a block; the tail block is kept in some rows
    mask[0, 0, 0] = False
    mask[0, 0, 0, 1] = True  # a row without the last block
    return q, k, v, mask


def _oracle(q, k, v, mask, scale):
    """float64 (out, lse) of the same bf16/fp16 values, with autograd."""
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    s = s.masked_fill(~expand_block_mask(mask, 128, q.shape[2], k.shape[2]), -math.inf)
    lse = torch.logsumexp(s, -1)
    return torch.exp(s - lse.unsqueeze(-1)) @ v.double(), lse


def _rel(a, b):
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


def test_descending_block_lists_layout():
    mask = torch.tensor([[[[True, False, True, True], [False, False, False, False], [False, True, False, False]]]])
    rows = descending_block_lists(mask)
    assert rows.dtype == torch.int32 and rows.is_contiguous()
    assert rows.tolist() == [[[[3, 2, 0, -1], [-1, -1, -1, -1], [1, -1, -1, -1]]]]
    cols = descending_block_lists(mask.transpose(-1, -2))
    assert cols.shape == (1, 1, 4, 3) and cols.is_contiguous()
    assert cols.tolist() == [[[[0, -1, -1], [2, -1, -1], [0, -1, -1], [0, -1, -1]]]]


def test_pack_and_unpack_are_inverse():
    x = torch.randn(2, 3, 5, 8)
    p = pack(x)
    assert p.shape == (10, 3, 8) and p.is_contiguous()
    assert torch.equal(p[7, 1], x[1, 1, 2])  # token 2 of batch 1 sits at row 1*5 + 2
    assert torch.equal(unpack(p, 2), x)


@pytest.mark.parametrize("lq, lk", [(300, 300), (200, 330), (128, 129)])
def test_forward_matches_oracle(standin, lq, lk):
    q, k, v, mask = _inputs(2, 3, lq, lk, 16, torch.bfloat16, seed=lq + lk)
    out, lse = standin.fn(q, k, v, mask, 128, 0.3)
    ref_out, ref_lse = _oracle(q, k, v, mask, 0.3)
    assert CALLS == ["fwd"]
    assert out.shape == q.shape and out.dtype == q.dtype and lse.shape == q.shape[:3] and lse.dtype == torch.float32
    assert _rel(out, ref_out) < 5e-3
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lse_weight", [0.0, 1.0, 30.0])
def test_gradients_through_out_and_lse_match_oracle(standin, lse_weight):
    """The LSE gradient reaches q and k exactly (the library's own autograd function would drop it)."""
    q, k, v, mask = _inputs(2, 2, 260, 300, 16, torch.float16, seed=3)
    go = torch.randn(q.shape, generator=torch.Generator().manual_seed(5))
    gl = torch.randn(q.shape[:3], generator=torch.Generator().manual_seed(6)) * lse_weight
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out, lse = standin.fn(*leaves, mask, 128, 0.25)
    grads = torch.autograd.grad((out.float() * go).sum() + (lse * gl).sum(), leaves)
    ref_leaves = [x.double().requires_grad_() for x in (q, k, v)]
    ro, rl = _oracle(*ref_leaves, mask, 0.25)
    ref = torch.autograd.grad((ro * go.double()).sum() + (rl * gl.double()).sum(), ref_leaves)
    assert CALLS == ["fwd", "bwd"]
    for name, a, r in zip("qkv", grads, ref, strict=True):
        assert a.dtype == torch.float16
        assert _rel(a, r) < 5e-3, name


def test_lse_only_gradient_and_rows_without_output_gradient(standin):
    """Rows whose output gradient is zero but whose LSE gradient is not take the second backward call."""
    q, k, v, mask = _inputs(1, 2, 300, 300, 16, torch.float16, seed=8)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    ref_leaves = [x.double().requires_grad_() for x in (q, k, v)]
    gl = torch.randn(q.shape[:3], generator=torch.Generator().manual_seed(9))
    go = torch.randn(q.shape, generator=torch.Generator().manual_seed(10))
    go[:, :, 100:200] = 0  # these rows only get an LSE gradient
    for out_weight in (0.0, 1.0):
        CALLS.clear()
        out, lse = standin.fn(*leaves, mask, 128, 0.25)
        loss = (lse * gl).sum() + ((out.float() * go).sum() if out_weight else 0.0)
        grads = torch.autograd.grad(loss, leaves)
        ro, rl = _oracle(*ref_leaves, mask, 0.25)
        ref_loss = (rl * gl.double()).sum() + ((ro * go.double()).sum() if out_weight else 0.0)
        ref = torch.autograd.grad(ref_loss, ref_leaves, allow_unused=True)
        assert CALLS == ["fwd", "bwd", "bwd"]
        assert _rel(grads[0], ref[0]) < 1e-2 and _rel(grads[1], ref[1]) < 1e-2
        if out_weight:
            assert _rel(grads[2], ref[2]) < 1e-2
        else:  # v gets no gradient from the LSE alone
            assert float(grads[2].abs().max()) == 0.0


@pytest.mark.parametrize("family, grid, text, d", [("wan", (3, 11, 13), 0, 128), ("cogvideox", (3, 12, 15), 37, 64)])
def test_asa_through_backend_matches_torch_backend(standin, family, grid, text, d):
    """ASA with this backend (global branch merged by LSE) equals ASA with the torch oracle (global branch folded),
    forward and gradients, at a sequence length that is not a multiple of 128."""
    n = grid[0] * grid[1] * grid[2] + text
    assert n % 128
    g = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(1, 2, n, d, generator=g).to(torch.float16) for _ in range(3))
    cfg = ASAConfig.for_family(family, num_keep=16, max_ratio=0.4, min_ratio=0.2)
    go = torch.randn(q.shape, generator=g)
    results = {}
    for backend in ("block_sparse_attn", "torch"):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        plans: list = []
        out = asa_attention(*leaves, grid=grid, num_text_tokens=text, config=cfg, backend=backend, plan_out=plans)
        grads = torch.autograd.grad((out.float() * go).sum(), leaves)
        results[backend] = (out, grads, plans[0])
    out, grads, plan = results["block_sparse_attn"]
    ref_out, ref_grads, ref_plan = results["torch"]
    assert plan.backend == "block_sparse_attn" and plan.global_mode == "merge" and ref_plan.global_mode == "fold"
    assert torch.equal(plan.selection.dense, ref_plan.selection.dense)
    assert 0 < float(plan.selection.density()) < 1
    assert _rel(out, ref_out) < 5e-3
    for name, a, r in zip("qkv", grads, ref_grads, strict=True):
        assert _rel(a, r) < 1e-2, name


def test_refuses_what_the_kernel_cannot_do(standin):
    q, k, v, mask = _inputs(1, 1, 200, 200, 16, torch.bfloat16)
    with pytest.raises(ValueError, match="float16 or bfloat16.*torch.float32"):
        standin.fn(q.float(), k.float(), v.float(), mask, 128, 0.25)
    big = torch.zeros(1, 1, 200, 136, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="multiple of 8 and at most 128; got 136"):
        standin.fn(big, big, big, mask, 128, 0.25)
    with pytest.raises(ValueError, match=r"\[1, 1, 2, 2\]; got torch.bool \[1, 1, 2, 3\]"):
        standin.fn(q, k, v, torch.ones(1, 1, 2, 3, dtype=torch.bool), 128, 0.25)
    with pytest.raises(ValueError, match="fixed block size of 128; got block_size=64"):
        standin.fn(q, k, v, mask, 64, 0.25)
    with pytest.raises(ValueError, match="does not support kv_bias"):
        standin.fn(q, k, v, mask, 128, 0.25, kv_bias=KVBias(((0, 1, 0.0),)))
    assert CALLS == []

