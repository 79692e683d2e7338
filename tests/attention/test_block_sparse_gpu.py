"""The ``block_sparse_attn`` backend on a GPU with mit-han-lab's library installed: the kernel against the torch
oracle (output, LSE and gradients through both), and ASA through ``backend="block_sparse_attn"`` against ASA
through the torch backend at reduced Wan (head_dim 128, no text) and CogVideoX (head_dim 64, text tokens) shapes
whose lengths are not multiples of 128, forward and gradients of q, k, v.

Tolerance: bf16/fp16 inputs, relative L2 error (||x - ref|| / ||ref||) at most 1e-2 for outputs and 2e-2 for
gradients (the kernel rounds P and dS to 16 bits, the oracle computes in float32); LSE within 2e-3 absolute.
"""

from __future__ import annotations

import pytest
import torch

from blade_ops.attention import ASAConfig, asa_attention
from blade_ops.attention.backends import BACKENDS, get_backend

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(
        not BACKENDS["block_sparse_attn"].available,
        reason="the block_sparse_attn package is not installed (README: 'block_sparse_attn backend')",
    ),
]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


@pytest.mark.parametrize("d, dtype, length", [(128, torch.bfloat16, 1000), (64, torch.bfloat16, 1337),
                                              (64, torch.float16, 640)])
def test_kernel_matches_torch_oracle(d, dtype, length):
    g = torch.Generator(device="cuda").manual_seed(d + length)
    q, k, v = (torch.randn(2, 3, length, d, device="cuda", generator=g).to(dtype) for _ in range(3))
    nb = -(-length // 128)
    mask = torch.rand(2, 3, nb, nb, device="cuda", generator=g) < 0.3
    mask[..., -1] = True  # every row keeps a block, the partial tail block included
    go = torch.randn(q.shape, device="cuda", generator=g)
    gl = torch.randn(q.shape[:3], device="cuda", generator=g)
    results = {}
    for name, cast in (("block_sparse_attn", dtype), ("torch", torch.float32)):
        leaves = [x.to(cast).requires_grad_() for x in (q, k, v)]
        out, lse = get_backend(name).fn(*leaves, mask, 128, d**-0.5)
        grads = torch.autograd.grad((out.float() * go).sum() + (lse * gl).sum(), leaves)
        results[name] = (out, lse, grads)
    out, lse, grads = results["block_sparse_attn"]
    ref_out, ref_lse, ref_grads = results["torch"]
    assert out.dtype == dtype and lse.dtype == torch.float32 and out.shape == q.shape
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    assert _rel(out, ref_out) < 1e-2
    assert float((lse - ref_lse).abs().max()) < 2e-3
    for name, a, r in zip("qkv", grads, ref_grads, strict=True):
        assert a.dtype == dtype and _rel(a, r) < 2e-2, name


@pytest.mark.parametrize(
    "family, heads, grid, text, d",
    [("wan", 4, (5, 14, 19), 0, 128), ("cogvideox", 4, (4, 12, 17), 45, 64)],
)
def test_asa_through_block_sparse_attn_matches_torch_backend(family, heads, grid, text, d):
    """Same bf16 inputs, so the same block selection; the kernel path merges the global branch by LSE, the oracle
    folds it into its call."""
    length = grid[0] * grid[1] * grid[2] + text
    assert length % 128
    g = torch.Generator(device="cuda").manual_seed(7)
    q, k, v = (torch.randn(1, heads, length, d, device="cuda", generator=g).to(torch.bfloat16) for _ in range(3))
    go = torch.randn(q.shape, device="cuda", generator=g)
    cfg = ASAConfig.for_family(family)
    results = {}
    for backend in ("block_sparse_attn", "torch"):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        plans: list = []
        out = asa_attention(*leaves, grid=grid, num_text_tokens=text, config=cfg, backend=backend, plan_out=plans)
        grads = torch.autograd.grad((out.float() * go).sum(), leaves)
        results[backend] = (out, grads, plans[0])
    out, grads, plan = results["block_sparse_attn"]
    ref_out, ref_grads, ref_plan = results["torch"]
    assert (plan.backend, plan.global_mode, ref_plan.global_mode) == ("block_sparse_attn", "merge", "fold")
    assert torch.equal(plan.selection.dense, ref_plan.selection.dense)
    assert 0 < float(plan.selection.density()) < 0.5
    assert torch.isfinite(out).all()
    assert _rel(out, ref_out) < 1e-2
    for name, a, r in zip("qkv", grads, ref_grads, strict=True):
        assert _rel(a, r) < 2e-2, name
