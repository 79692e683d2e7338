"""``block_sparse_attn`` backend: mit-han-lab's Block-Sparse-Attention CUDA kernel (the BLADE reference kernel).

Not on PyPI; build it from https://github.com/mit-han-lab/Block-Sparse-Attention (README "block_sparse_attn
backend"). The backend calls the library's forward and backward kernel entry points (the two ops behind its
``block_sparse_attn_func``) through an autograd function of its own:

- q, k, v [B, H, L, D] are packed into the library's variable-length layout [B*L, H, D] with cumulative sequence
  lengths; every head is block-sparse (``head_mask_type`` h+1 reads mask head h); the block size is fixed at 128;
- the bool mask [B, H, ceil(Lq/128), ceil(Lk/128)] goes to the forward as, for each query-block row, the kept
  key-block indices in descending order padded with -1 ([B, H, R, C] int32), and to the backward as the same for
  each key-block column ([B, H, C, R]): the layouts the kernels binary-search;
- the log-sum-exp is differentiable (the library's own autograd function drops its gradient). The backward reads
  the output O only through D_i = dO_i . O_i, and an LSE gradient g_i changes the score gradient exactly as
  D_i -> D_i - g_i does, so the backward gets O shifted along dO to give that D; rows with dO_i = 0 and g_i != 0
  take one more backward call. ASA's global branch, merged through the LSE, therefore gets exact gradients.

Kernel envelope: float16/bfloat16, head_dim a multiple of 8 and at most 128 (above 128 this library version
launches nothing), forward and backward; a build trimmed to fewer head dims or dtypes raises from the library.
"""

from __future__ import annotations

import logging
import math

import torch

from . import _has, register

logger = logging.getLogger(__name__)

AVAILABLE = _has("block_sparse_attn")
INSTALL_HINT = (
    "the 'block_sparse_attn' package is not installed and is not on PyPI; build it from "
    "https://github.com/mit-han-lab/Block-Sparse-Attention for your GPU (README: 'block_sparse_attn backend')"
)
BLOCK = 128  # the library's fixed sparse block size (m_block_dim = n_block_dim = 128)
DTYPES = (torch.float16, torch.bfloat16)


def descending_block_lists(mask: torch.Tensor) -> torch.Tensor:
    """[..., R, C] bool -> [..., R, C] int32: per row the kept column indices, descending, then -1 padding.

    ``mask`` gives the forward's row lists; ``mask.transpose(-1, -2)`` the backward's column lists.
    """
    idx = torch.arange(mask.shape[-1], device=mask.device, dtype=torch.int32)
    lists = torch.where(mask, idx, -1)
    return lists.sort(dim=-1, descending=True).values.contiguous()


def pack(x: torch.Tensor) -> torch.Tensor:
    """[B, H, L, D] -> the library's packed [B*L, H, D] (contiguous)."""
    b, h, length, d = x.shape
    return x.transpose(1, 2).reshape(b * length, h, d).contiguous()


def unpack(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Packed [B*L, H, D] -> [B, H, L, D] (a view)."""
    total, h, d = x.shape
    return x.view(batch, total // batch, h, d).transpose(1, 2)


def _library_ops():
    """(forward op, backward op) of the installed library."""
    from block_sparse_attn import block_sparse_attn_interface as lib

    try:
        return lib._wrapped_block_sparse_attn_forward, lib._wrapped_block_sparse_attn_backward
    except AttributeError as err:
        raise RuntimeError(
            f"the installed block_sparse_attn ({getattr(lib, '__file__', '?')}) has no "
            "_wrapped_block_sparse_attn_forward/_backward; the backend was written for Block-Sparse-Attention 0.0.2 "
            "(commit 49d6c39); rebuild that version or pick backend 'flex'."
        ) from err


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: torch.Tensor) -> None:
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(
            f"backend 'block_sparse_attn' takes float16 or bfloat16 q, k, v of one dtype; got {q.dtype}, {k.dtype}, "
            f"{v.dtype}. Cast the inputs (the models run in bf16) or pick backend 'flex' or 'torch'."
        )
    d = q.shape[-1]
    if d % 8 or d > 128 or k.shape[-1] != d or v.shape[-1] != d:
        raise ValueError(
            f"backend 'block_sparse_attn' needs one head_dim for q, k, v, a multiple of 8 and at most 128; got "
            f"{q.shape[-1]}, {k.shape[-1]}, {v.shape[-1]}. Pick backend 'flex' for this model."
        )
    b, h, len_q = q.shape[:3]
    want = (b, h, -(-len_q // BLOCK), -(-k.shape[2] // BLOCK))
    if tuple(block_mask.shape) != want or block_mask.dtype != torch.bool:
        raise ValueError(
            f"block_mask must be bool of shape [B, H, ceil(Lq/128), ceil(Lk/128)] = {list(want)}; got "
            f"{block_mask.dtype} {list(block_mask.shape)}."
        )


class _BlockSparseAttention(torch.autograd.Function):
    """(out, lse) of the library's kernels, differentiable in q, k, v through both outputs."""

    @staticmethod
    def forward(ctx, q, k, v, block_mask, scale):
        fwd, _ = _library_ops()
        b, h, len_q, _ = q.shape
        len_k = k.shape[2]
        dev = q.device
        qp, kp, vp = pack(q), pack(k), pack(v)
        cu_q = torch.arange(0, b + 1, device=dev, dtype=torch.int32) * len_q
        cu_k = torch.arange(0, b + 1, device=dev, dtype=torch.int32) * len_k
        head_mask_type = torch.arange(1, h + 1, device=dev, dtype=torch.int32)  # head i reads mask head i
        streaming_info = torch.zeros(2 * h, device=dev, dtype=torch.int32)  # read only by streaming heads
        out, lse, _, rng_state = fwd(
            qp, kp, vp, cu_q, cu_k, BLOCK, BLOCK, head_mask_type, streaming_info,
            descending_block_lists(block_mask), len_q, len_k, 0.0, scale, False, False, False, -1, -1,
        )
        ctx.save_for_backward(qp, kp, vp, out, lse, cu_q, cu_k, head_mask_type, streaming_info, block_mask, rng_state)
        ctx.scale, ctx.batch, ctx.lens = scale, b, (len_q, len_k)
        ctx.set_materialize_grads(False)
        return unpack(out, b), lse[..., :len_q]

    @staticmethod
    def backward(ctx, d_out, d_lse):
        _, bwd = _library_ops()
        qp, kp, vp, out, lse, cu_q, cu_k, head_mask_type, streaming_info, block_mask, rng_state = ctx.saved_tensors
        len_q, len_k = ctx.lens
        cols = descending_block_lists(block_mask.transpose(-1, -2))

        def call(dout: torch.Tensor, out_for_d: torch.Tensor) -> tuple[torch.Tensor, ...]:
            dq, dk, dv = torch.empty_like(qp), torch.empty_like(kp), torch.empty_like(vp)
            bwd(
                dout, qp, kp, vp, out_for_d, lse, dq, dk, dv, cu_q, cu_k, BLOCK, BLOCK, head_mask_type,
                streaming_info, cols, len_q, len_k, 0.0, ctx.scale, True, False, -1, -1, False, rng_state=rng_state,
            )
            return dq, dk, dv

        if d_out is None and d_lse is None:
            return None, None, None, None, None
        dout = torch.zeros_like(out) if d_out is None else pack(d_out.to(out.dtype))
        if d_lse is None:
            grads = call(dout, out)
        else:
            grads = _with_lse_gradient(call, dout, out, d_lse.float().transpose(1, 2).reshape(out.shape[:2]))
        b = ctx.batch
        return unpack(grads[0], b), unpack(grads[1], b), unpack(grads[2], b), None, None


def _with_lse_gradient(call, dout: torch.Tensor, out: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Backward with an LSE gradient g [B*L, H]: dS = P (dP - D + g) = P (dP - D'), D' = dO . O' with O' = O + a dO.

    Rows where dO = 0 but g != 0 get dO = |g| e_0 there (then O' = O - sign(g) e_0), and a second call with that
    dO and the plain O removes what it adds (the gradient of the output component it picks). The backward is
    linear in (dO, D) jointly, and those rows had no dO of their own, so the two calls differ by exactly that.
    """
    lonely = (dout == 0).all(-1) & (g != 0)
    extra = None
    if bool(lonely.any()):  # host sync, only on the backward of a call whose LSE got a gradient
        extra = torch.zeros_like(dout)
        extra[..., 0] = torch.where(lonely, g.abs(), 0.0).to(dout.dtype)
        dout = dout + extra
    do32 = dout.float()
    sq = do32.square().sum(-1)
    a = torch.where(sq > 0, -g / sq.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    shifted = (out.float() + a.unsqueeze(-1) * do32).to(out.dtype)
    grads = call(dout, shifted)
    if extra is None:
        return grads
    spurious = call(extra, out)
    return tuple((x.float() - y.float()).to(x.dtype) for x, y in zip(grads, spurious, strict=True))


@register("block_sparse_attn", available=AVAILABLE, install_hint=INSTALL_HINT, devices=("cuda",))
def block_sparse_attn_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    block_size: int,
    scale: float,
    *,
    kv_bias: object | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, H, Lq, D], lse [B, H, Lq] float32) with the library's kernels; both differentiable."""
    if kv_bias is not None:
        raise ValueError("backend 'block_sparse_attn' does not support kv_bias; use global_mode='merge'.")
    if block_size != BLOCK:
        raise ValueError(f"backend 'block_sparse_attn' has a fixed block size of 128; got block_size={block_size}.")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale={scale!r} must be a positive finite number.")
    _check(q, k, v, block_mask)
    return _BlockSparseAttention.apply(q, k, v, block_mask, float(scale))
