"""Token permutation of [B, H, L, D] tensors with a gradient (the curve reorder of BLADE Sec. 3.2, step 1).

``permute_tokens(x, perm, inverse)`` returns ``x[:, :, perm]`` as a contiguous tensor; its backward is the
gather by ``inverse`` (a permutation's transpose), so no scatter-add is needed. On CUDA a Triton kernel copies
whole rows with wide loads; elsewhere ``index_select`` does it.
"""

from __future__ import annotations

import importlib.util

import torch

_TRITON = importlib.util.find_spec("triton") is not None
if _TRITON:
    try:
        import triton
        import triton.language as tl
    except ImportError:
        _TRITON = False

if _TRITON:

    @triton.jit
    def _gather_rows_kernel(
        X, Y, IDX, length, n_heads,
        sx_b, sx_h, sx_l,
        D: tl.constexpr, BLOCK_T: tl.constexpr,
    ):
        pid_t = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = (pid_bh // n_heads).to(tl.int64)
        h = (pid_bh % n_heads).to(tl.int64)
        rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        valid = rows < length
        src = tl.load(IDX + rows, mask=valid, other=0).to(tl.int64)
        dims = tl.arange(0, D)
        x = tl.load(X + b * sx_b + h * sx_h + src[:, None] * sx_l + dims[None, :], mask=valid[:, None])
        dst = Y + pid_bh.to(tl.int64) * length * D + rows.to(tl.int64)[:, None] * D + dims[None, :]
        tl.store(dst, x, mask=valid[:, None])


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    b, h, length, d = x.shape
    if not (_TRITON and x.is_cuda and d >= 16 and d & (d - 1) == 0 and x.stride(-1) == 1):
        return x.index_select(2, index)
    y = torch.empty(b, h, length, d, device=x.device, dtype=x.dtype)
    block_t = max(1, 4096 // d)
    _gather_rows_kernel[(triton.cdiv(length, block_t), b * h)](
        x, y, index, length, h, x.stride(0), x.stride(1), x.stride(2), D=d, BLOCK_T=block_t, num_warps=4,
    )
    return y


class _PermuteTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse, perm)
        return _gather(x, perm)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inverse, _ = ctx.saved_tensors
        return _gather(grad.contiguous() if grad.stride(-1) != 1 else grad, inverse), None, None


def permute_tokens(x: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, D] -> x[:, :, perm] (contiguous); ``inverse`` is perm's inverse, used by the backward."""
    if x.is_cuda and _TRITON:
        return _PermuteTokens.apply(x, perm, inverse)
    return x.index_select(2, perm)
