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
        sx_b, sx_h, sx_l, y_rows,
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
        dst = Y + pid_bh.to(tl.int64) * y_rows * D + rows.to(tl.int64)[:, None] * D + dims[None, :]
        tl.store(dst, x, mask=valid[:, None])


def _gather(x: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x[:, :, index] as a new contiguous tensor, or written into rows [0, L) of a contiguous ``out``."""
    b, h, length, d = x.shape
    if not (_TRITON and x.is_cuda and d >= 16 and d & (d - 1) == 0 and x.stride(-1) == 1):
        y = x.index_select(2, index)
        if out is None:
            return y
        out[:, :, :length].copy_(y)
        return out
    y = torch.empty(b, h, length, d, device=x.device, dtype=x.dtype) if out is None else out
    block_t = max(1, 4096 // d)
    _gather_rows_kernel[(triton.cdiv(length, block_t), b * h)](
        x, y, index, length, h, x.stride(0), x.stride(1), x.stride(2), y.shape[2], D=d, BLOCK_T=block_t,
        num_warps=4,
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


def pool_kv(x: torch.Tensor, num_video: int, gap: int) -> torch.Tensor:
    """Mean of every ``gap`` consecutive video tokens: x [B, H, L, D] -> [B, H, ceil(Nv/gap), D].

    The last group may be shorter (it is averaged over the tokens it has).
    """
    b, h, _, d = x.shape
    full = num_video // gap
    parts = []
    if full:
        parts.append(x[:, :, : full * gap].reshape(b, h, full, gap, d).mean(dim=3))
    if num_video - full * gap:
        parts.append(x[:, :, full * gap : num_video].mean(dim=2, keepdim=True))
    return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]


class _PermuteFold(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, perm, inverse, num_video: int, gap: int, start: int):
        b, h, length, d = x.shape
        num_pooled = -(-num_video // gap)
        buf = x.new_empty(b, h, start + num_pooled, d)
        if perm is None:
            buf[:, :, :length].copy_(x)
        else:
            _gather(x, perm, out=buf)
        if start > length:
            buf[:, :, length:start].zero_()
        buf[:, :, start:].copy_(pool_kv(buf, num_video, gap))
        ctx.save_for_backward(inverse if perm is not None else None)
        ctx.meta = (length, num_video, gap, start)
        return buf

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        length, num_video, gap, start = ctx.meta
        b, h, _, d = grad.shape
        d_curve = grad[:, :, :length].contiguous()
        d_pool = grad[:, :, start:]
        full = num_video // gap
        if full:
            d_curve[:, :, : full * gap].view(b, h, full, gap, d).add_(d_pool[:, :, :full, None] / gap)
        rest = num_video - full * gap
        if rest:
            d_curve[:, :, full * gap : num_video].add_(d_pool[:, :, full : full + 1] / rest)
        if inverse is not None:
            d_curve = _gather(d_curve, inverse)
        return d_curve, None, None, None, None, None


def permute_and_fold(
    x: torch.Tensor, perm: torch.Tensor | None, inverse: torch.Tensor | None, num_video: int, gap: int, start: int
) -> torch.Tensor:
    """[x[:, :, perm] | zeros up to ``start`` | means of every ``gap`` video rows] in one buffer, with a gradient.

    x [B, H, L, D] -> [B, H, start + ceil(num_video / gap), D]; the key/value layout of the folded global branch
    (BLADE Sec. 3.2, step 6) written without an intermediate concatenation.
    """
    return _PermuteFold.apply(x, perm, inverse, num_video, gap, start)
