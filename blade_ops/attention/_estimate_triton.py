"""Fused CUDA kernel for the ASA block-importance estimate (BLADE Sec. 3.2, step 3).

Same function as :func:`blade_ops.attention.estimate.estimate_block_importance_reference`, without ever holding
the sampled score matrix [nqb*S, nkb*S] in memory. One program handles ``QB`` query blocks of one (batch, head):

* pass 1 streams the sampled keys ``KB`` blocks at a time, computes the scores on the tensor cores, max-reduces
  them per key block, writes these block maxima [QB*S, nkb] (1/S of the scores) to a workspace and keeps the
  running row maximum over all sampled keys;
* pass 2 reads its own block maxima back (they sit in L2), subtracts the row maximum, exponentiates and
  max-pools over the S sampled queries of each block.

Row normalisation is one small PyTorch division afterwards. Importing this module never fails: ``AVAILABLE``
says whether Triton could be imported.
"""

from __future__ import annotations

import importlib.util
import math

import torch

AVAILABLE = importlib.util.find_spec("triton") is not None

if AVAILABLE:
    try:
        import triton
        import triton.language as tl
    except ImportError:  # a broken Triton install: report unavailable, the caller raises if it was required
        AVAILABLE = False

if AVAILABLE:

    @triton.jit
    def _block_importance_kernel(
        Q, K, OFF, WS, P,
        sq_b, sq_h, sq_l,
        sk_b, sk_h, sk_l,
        sws_bh, sws_r,
        sp_bh, sp_r,
        n_heads, len_q, len_k, nqb, nkb, scale_log2e,
        D: tl.constexpr, S: tl.constexpr, QB: tl.constexpr, KB: tl.constexpr, BLOCK: tl.constexpr,
    ):
        pid_q = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // n_heads
        h = pid_bh % n_heads
        M: tl.constexpr = QB * S
        N: tl.constexpr = KB * S
        rows = tl.arange(0, M)
        dims = tl.arange(0, D)
        q_blk = pid_q * QB + rows // S
        q_off = tl.load(OFF + pid_bh * S + rows % S)
        q_tok = tl.minimum(q_blk * BLOCK + q_off, len_q - 1).to(tl.int64)
        q = tl.load(Q + b.to(tl.int64) * sq_b + h.to(tl.int64) * sq_h + q_tok[:, None] * sq_l + dims[None, :])

        cols = tl.arange(0, N)
        k_off = tl.load(OFF + pid_bh * S + cols % S)
        k_base = K + b.to(tl.int64) * sk_b + h.to(tl.int64) * sk_h
        kb_local = tl.arange(0, KB)
        ws_rows = WS + pid_bh.to(tl.int64) * sws_bh + (pid_q * M + rows).to(tl.int64)[:, None] * sws_r
        row_max = tl.full([M], float("-inf"), tl.float32)
        for kb0 in range(0, nkb, KB):
            k_tok = tl.minimum((kb0 + cols // S) * BLOCK + k_off, len_k - 1).to(tl.int64)
            k = tl.load(k_base + k_tok[:, None] * sk_l + dims[None, :])
            s = tl.dot(q, tl.trans(k))  # [M, N] fp32
            blk_max = tl.max(tl.reshape(s, [M, KB, S]), axis=2)  # [M, KB]
            blk_max = tl.where((kb0 + kb_local)[None, :] < nkb, blk_max, float("-inf"))
            row_max = tl.maximum(row_max, tl.max(blk_max, axis=1))
            tl.store(ws_rows + (kb0 + kb_local)[None, :], blk_max)

        tl.debug_barrier()  # the block maxima written above are read back by other threads of this program

        q_blocks = pid_q * QB + tl.arange(0, QB)
        p_rows = P + pid_bh.to(tl.int64) * sp_bh + q_blocks[:, None] * sp_r
        for kb0 in range(0, nkb, KB):
            blk_max = tl.load(ws_rows + (kb0 + kb_local)[None, :])
            e = tl.exp2((blk_max - row_max[:, None]) * scale_log2e)
            pooled = tl.max(tl.reshape(e, [QB, S, KB]), axis=1)  # [QB, KB]
            kbs = kb0 + kb_local
            tl.store(p_rows + kbs[None, :], pooled, mask=(q_blocks[:, None] < nqb) & (kbs[None, :] < nkb))


def launch_config(num_keep: int, head_dim: int) -> dict[str, int]:
    """Tile choice: 128 sampled query rows per program (fills an MMA tile), 128 sampled keys per step."""
    qb = max(1, 128 // num_keep)
    kb = max(1, 128 // num_keep)
    return {"QB": qb, "KB": kb, "num_warps": 8 if head_dim >= 128 else 4, "num_stages": 2}


@torch.no_grad()
def estimate_block_importance_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    offsets: torch.Tensor,
    block_size: int,
    scale: float | None = None,
    config: dict[str, int] | None = None,
) -> torch.Tensor:
    """P [B, H, nqb, nkb] float32 (rows sum to 1) from q [B, H, Lq, D], k [B, H, Lk, D], offsets [B, H, S]."""
    if not AVAILABLE:
        raise RuntimeError("The fused estimate needs Triton: pip install triton (it ships with CUDA PyTorch).")
    b, h, len_q, d = q.shape
    len_k = k.shape[2]
    s = offsets.shape[-1]
    if q.stride(-1) != 1:
        q = q.contiguous()
    if k.stride(-1) != 1:
        k = k.contiguous()
    if k.dtype != q.dtype:
        k = k.to(q.dtype)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    cfg = dict(launch_config(s, d) if config is None else config)
    qb, kb = cfg.pop("QB"), cfg.pop("KB")
    nqb = -(-len_q // block_size)
    nkb = -(-len_k // block_size)
    nqb_pad = -(-nqb // qb) * qb
    nkb_pad = -(-nkb // kb) * kb
    offsets = offsets.to(device=q.device, dtype=torch.int32).reshape(b * h, s).contiguous()
    ws = torch.empty(b * h, nqb_pad * s, nkb_pad, device=q.device, dtype=torch.float32)
    p = torch.empty(b * h, nqb, nkb, device=q.device, dtype=torch.float32)
    grid = (nqb_pad // qb, b * h)
    _block_importance_kernel[grid](
        q, k, offsets, ws, p,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        ws.stride(0), ws.stride(1),
        p.stride(0), p.stride(1),
        h, len_q, len_k, nqb, nkb, scale * 1.4426950408889634,
        D=d, S=s, QB=qb, KB=kb, BLOCK=block_size, **cfg,
    )
    p = p.view(b, h, nqb, nkb)
    return p / p.sum(dim=-1, keepdim=True)
