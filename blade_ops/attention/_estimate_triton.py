"""Fused CUDA kernel for the ASA block-importance estimate (BLADE Sec. 3.2, step 3).

Same function as :func:`blade_ops.attention.estimate.estimate_block_importance_reference`, without ever holding
the sampled score matrix [nqb*S, nkb*S] in memory. One program handles ``QB`` query blocks of one (batch, head):

* pass 1 streams the sampled keys ``KB`` blocks at a time, computes the scores on the tensor cores, max-reduces
  them per key block, writes these block maxima [QB*S, nkb] (1/S of the scores) to a workspace and keeps the
  running row maximum over all sampled keys;
* pass 2 reads its own block maxima back (they sit in L2) ``KB2`` key blocks at a time, subtracts the row
  maximum, exponentiates, max-pools over the S sampled queries of each block and sums each row;
* pass 3 divides the program's own rows of P by their sums (row normalisation without extra launches).

The fp8 variant (``precision="fp8"``, GPUs with fp8 tensor cores: compute capability 8.9 or later) first gathers
the sampled tokens into compact e4m3 copies, each sampled query row with its own scale and each sampled key block
with one scale. Both scales are positive and constant over every maximum they enter (a query's row, a key block),
so they are applied to the block maxima instead of the scores: pass 1 runs on fp8 tensor cores with half the
bytes per key, and P is the exact function of the quantised q and k that
:func:`blade_ops.attention.estimate.estimate_block_importance_reference` computes with ``precision="fp8"``.

Importing this module never fails: ``AVAILABLE`` says whether Triton could be imported.
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
        D: tl.constexpr, S: tl.constexpr, QB: tl.constexpr, KB: tl.constexpr, KB2: tl.constexpr,
        BLOCK: tl.constexpr,
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

        # pass 1: block maxima of the sampled scores [M, nkb] -> workspace, running row maximum
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
        _pool_and_normalise(WS + pid_bh.to(tl.int64) * sws_bh, sws_r, P + pid_bh.to(tl.int64) * sp_bh, sp_r, pid_q,
                            row_max, tl.full([M], scale_log2e, tl.float32), nqb, nkb, S, QB, KB2)

    @triton.jit
    def _pool_and_normalise(ws_bh, sws_r, p_bh, sp_r, pid_q, row_max, row_coef, nqb, nkb,
                            S: tl.constexpr, QB: tl.constexpr, KB2: tl.constexpr):
        """Passes 2-3: P rows of this program's QB query blocks from the block maxima in the workspace.

        ``row_coef`` [QB*S] turns a difference of block maxima into log2 units (softmax scale, fp8 row scales).
        """
        M: tl.constexpr = QB * S
        ws_rows = ws_bh + (pid_q * M + tl.arange(0, M)).to(tl.int64)[:, None] * sws_r
        q_blocks = pid_q * QB + tl.arange(0, QB)
        p_rows = p_bh + q_blocks[:, None] * sp_r
        q_ok = q_blocks[:, None] < nqb
        kb2_local = tl.arange(0, KB2)
        row_sum = tl.zeros([QB], tl.float32)
        # pass 2: exp(block max - row max), max-pooled over the S sampled queries of each block; row sums
        for kb0 in range(0, nkb, KB2):
            kbs = kb0 + kb2_local
            blk_max = tl.load(ws_rows + kbs[None, :], mask=kbs[None, :] < nkb, other=float("-inf"))
            e = tl.exp2((blk_max - row_max[:, None]) * row_coef[:, None])
            pooled = tl.max(tl.reshape(e, [QB, S, KB2]), axis=1)  # [QB, KB2]
            row_sum += tl.sum(pooled, axis=1)
            tl.store(p_rows + kbs[None, :], pooled, mask=q_ok & (kbs[None, :] < nkb))

        tl.debug_barrier()

        # pass 3: normalise the rows this program owns (they are still in L1/L2)
        for kb0 in range(0, nkb, KB2):
            kbs = kb0 + kb2_local
            ok = q_ok & (kbs[None, :] < nkb)
            pooled = tl.load(p_rows + kbs[None, :], mask=ok, other=0.0)
            tl.store(p_rows + kbs[None, :], pooled / row_sum[:, None], mask=ok)

    @triton.jit
    def _quantise_sampled_kernel(
        X, OFF, X8, SC, sx_b, sx_h, sx_l, n_heads, length, nb,
        D: tl.constexpr, S: tl.constexpr, G: tl.constexpr, BLOCK: tl.constexpr, PER_BLOCK: tl.constexpr,
    ):
        """Sampled rows of G blocks of one (batch, head) -> e4m3 rows [G*S, D] and their scales.

        Scales: one per row ([BH, nb*S]) or, with PER_BLOCK, one per block ([BH, nb]); scale = amax / 448.
        """
        pid = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // n_heads
        h = pid_bh % n_heads
        R: tl.constexpr = G * S
        rows = tl.arange(0, R)
        blk = pid * G + rows // S
        tok = tl.minimum(blk * BLOCK + tl.load(OFF + pid_bh * S + rows % S), length - 1).to(tl.int64)
        dims = tl.arange(0, D)
        ok = blk < nb
        x = tl.load(X + b.to(tl.int64) * sx_b + h.to(tl.int64) * sx_h + tok[:, None] * sx_l + dims[None, :],
                    mask=ok[:, None], other=0.0).to(tl.float32)
        if PER_BLOCK:
            amax = tl.max(tl.max(tl.reshape(tl.abs(x), [G, S, D]), axis=2), axis=1)  # [G]
            scale = tl.where(amax > 0, amax / 448.0, 1.0)
            blocks = pid * G + tl.arange(0, G)
            tl.store(SC + pid_bh.to(tl.int64) * nb + blocks, scale, mask=blocks < nb)
            inv = tl.reshape(tl.broadcast_to((1.0 / scale)[:, None], [G, S]), [R])
        else:
            amax = tl.max(tl.abs(x), axis=1)  # [R]
            scale = tl.where(amax > 0, amax / 448.0, 1.0)
            tl.store(SC + pid_bh.to(tl.int64) * nb * S + pid * R + rows, scale, mask=ok)
            inv = 1.0 / scale
        y = tl.minimum(tl.maximum(x * inv[:, None], -448.0), 448.0)
        out_rows = (pid_bh.to(tl.int64) * nb * S + pid * R + rows)[:, None] * D
        tl.store(X8 + out_rows + dims[None, :], y.to(tl.float8e4nv), mask=ok[:, None])

    @triton.jit
    def _block_importance_fp8_kernel(
        Q8, QS, K8, KS, WS, P,
        sws_bh, sws_r, sp_bh, sp_r, nqb, nkb, scale_log2e,
        D: tl.constexpr, S: tl.constexpr, QB: tl.constexpr, KB: tl.constexpr, KB2: tl.constexpr,
    ):
        pid_q = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        M: tl.constexpr = QB * S
        N: tl.constexpr = KB * S
        rows = pid_q * M + tl.arange(0, M)
        dims = tl.arange(0, D)
        q_ok = rows < nqb * S
        q = tl.load(Q8 + pid_bh * nqb * S * D + rows.to(tl.int64)[:, None] * D + dims[None, :], mask=q_ok[:, None],
                    other=0.0)

        # pass 1 on quantised tokens: block maxima times the key block's scale (a positive constant per block)
        cols = tl.arange(0, N)
        kb_local = tl.arange(0, KB)
        k_base = K8 + pid_bh * nkb * S * D
        ws_bh = WS + pid_bh * sws_bh
        ws_rows = ws_bh + rows.to(tl.int64)[:, None] * sws_r
        row_max = tl.full([M], float("-inf"), tl.float32)
        for kb0 in range(0, nkb, KB):
            k_rows = kb0 * S + cols
            k = tl.load(k_base + k_rows.to(tl.int64)[:, None] * D + dims[None, :], mask=k_rows[:, None] < nkb * S,
                        other=0.0)
            s = tl.dot(q, tl.trans(k))  # [M, N] fp32, in units of the row's and the block's scales
            kbs = kb0 + kb_local
            k_scale = tl.load(KS + pid_bh * nkb + kbs, mask=kbs < nkb, other=1.0)
            blk_max = tl.max(tl.reshape(s, [M, KB, S]), axis=2) * k_scale[None, :]
            blk_max = tl.where(kbs[None, :] < nkb, blk_max, float("-inf"))
            row_max = tl.maximum(row_max, tl.max(blk_max, axis=1))
            tl.store(ws_rows + kbs[None, :], blk_max)

        tl.debug_barrier()
        row_coef = tl.load(QS + pid_bh * nqb * S + rows, mask=q_ok, other=1.0) * scale_log2e
        _pool_and_normalise(ws_bh, sws_r, P + pid_bh * sp_bh, sp_r, pid_q, row_max, row_coef, nqb, nkb, S, QB, KB2)


# Tiles per (num_keep, head_dim), timed on an H100 at the Wan (d 128) and CogVideoX (d 64) shapes.
_TUNED: dict[tuple[int, int], dict[str, int]] = {
    (32, 128): {"QB": 4, "KB": 4, "KB2": 64, "num_warps": 4, "num_stages": 2},
    (32, 64): {"QB": 2, "KB": 4, "KB2": 32, "num_warps": 4, "num_stages": 3},
    (16, 128): {"QB": 8, "KB": 8, "KB2": 64, "num_warps": 4, "num_stages": 2},
    (16, 64): {"QB": 8, "KB": 8, "KB2": 8, "num_warps": 4, "num_stages": 2},
}
_TUNED_FP8: dict[tuple[int, int], dict[str, int]] = {
    (32, 128): {"QB": 2, "KB": 8, "KB2": 64, "num_warps": 4, "num_stages": 3},
    (32, 64): {"QB": 4, "KB": 8, "KB2": 32, "num_warps": 4, "num_stages": 2},
}
PRECISIONS = ("bf16", "fp8")


def launch_config(num_keep: int, head_dim: int, precision: str = "bf16") -> dict[str, int]:
    """Tile choice: the timed table, else 128 sampled query rows per program and 128 sampled keys per step.

    QB query blocks and KB key blocks per step of pass 1 (QB*S x KB*S scores), KB2 key blocks per step of pass 2.
    """
    tuned = (_TUNED_FP8 if precision == "fp8" else {}).get((num_keep, head_dim)) or _TUNED.get((num_keep, head_dim))
    if tuned is not None:
        return dict(tuned)
    qb = max(1, 128 // num_keep)
    kb = max(1, 128 // num_keep)
    return {
        "QB": qb, "KB": kb, "KB2": 64, "num_warps": 8 if head_dim >= 128 else 4, "num_stages": 2,
    }


def fp8_supported(device: torch.device) -> bool:
    """Whether ``device`` has fp8 (e4m3) tensor cores: CUDA compute capability 8.9 (Ada) or later."""
    return AVAILABLE and device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def quantise_sampled_triton(
    x: torch.Tensor, offsets: torch.Tensor, block_size: int, per_block: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled rows of x [B, H, L, D] as e4m3 [B*H, nb*S, D] plus scales [B*H, nb*S] (per row) or [B*H, nb]."""
    b, h, length, d = x.shape
    s = offsets.shape[-1]
    nb = -(-length // block_size)
    if x.stride(-1) != 1:
        x = x.contiguous()
    x8 = torch.empty(b * h, nb * s, d, device=x.device, dtype=torch.float8_e4m3fn)
    scales = torch.empty(b * h, nb if per_block else nb * s, device=x.device, dtype=torch.float32)
    g = max(1, 128 // s)
    _quantise_sampled_kernel[(-(-nb // g), b * h)](
        x, offsets, x8, scales, x.stride(0), x.stride(1), x.stride(2), h, length, nb,
        D=d, S=s, G=g, BLOCK=block_size, PER_BLOCK=per_block, num_warps=4,
    )
    return x8, scales


@torch.no_grad()
def estimate_block_importance_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    offsets: torch.Tensor,
    block_size: int,
    scale: float | None = None,
    config: dict[str, int] | None = None,
    precision: str = "bf16",
) -> torch.Tensor:
    """P [B, H, nqb, nkb] float32 (rows sum to 1) from q [B, H, Lq, D], k [B, H, Lk, D], offsets [B, H, S].

    ``precision``: "bf16" (the scores from q and k as given) or "fp8" (from their e4m3 copies; see the module
    docstring).
    """
    if not AVAILABLE:
        raise RuntimeError("The fused estimate needs Triton: pip install triton (it ships with CUDA PyTorch).")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} must be one of {PRECISIONS}.")
    if precision == "fp8" and q.is_cuda and not fp8_supported(q.device):
        raise RuntimeError(
            f"The fp8 estimate needs fp8 tensor cores (compute capability 8.9 or later); "
            f"{torch.cuda.get_device_name(q.device)} has {torch.cuda.get_device_capability(q.device)}. "
            "Use precision='bf16'."
        )
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
    cfg = dict(launch_config(s, d, precision) if config is None else config)
    qb, kb = cfg.pop("QB"), cfg.pop("KB")
    nqb = -(-len_q // block_size)
    nkb = -(-len_k // block_size)
    nqb_pad = -(-nqb // qb) * qb
    nkb_pad = -(-nkb // kb) * kb  # pass 1 writes whole KB chunks; pass 2 masks its reads at nkb
    offsets = offsets.to(device=q.device, dtype=torch.int32).reshape(b * h, s).contiguous()
    ws = torch.empty(b * h, nqb_pad * s, nkb_pad, device=q.device, dtype=torch.float32)
    p = torch.empty(b * h, nqb, nkb, device=q.device, dtype=torch.float32)
    grid = (nqb_pad // qb, b * h)
    if precision == "fp8":
        q8, q_scales = quantise_sampled_triton(q, offsets, block_size, per_block=False)
        k8, k_scales = quantise_sampled_triton(k, offsets, block_size, per_block=True)
        _block_importance_fp8_kernel[grid](
            q8, q_scales, k8, k_scales, ws, p, ws.stride(0), ws.stride(1), p.stride(0), p.stride(1),
            nqb, nkb, scale * 1.4426950408889634, D=d, S=s, QB=qb, KB=kb, **cfg,
        )
        return p.view(b, h, nqb, nkb)
    _block_importance_kernel[grid](
        q, k, offsets, ws, p,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        ws.stride(0), ws.stride(1),
        p.stride(0), p.stride(1),
        h, len_q, len_k, nqb, nkb, scale * 1.4426950408889634,
        D=d, S=s, QB=qb, KB=kb, BLOCK=block_size, **cfg,
    )
    return p.view(b, h, nqb, nkb)
