"""Cheap block-importance estimate (BLADE Sec. 3.2, step 3; REFERENCE.md ASA step 3).

For each (batch, head), ``num_keep`` offsets inside a block are drawn once and used for every block: sampled
queries attend to sampled keys with scale ``1/sqrt(d)``, and for query block ``qb`` and key block ``kb``::

    P[qb, kb] = max_{i in qb} exp( max_{j in kb} s_ij  -  max_{all sampled j} s_ij )

then each row of P is normalised to sum 1. Sequences are padded to a multiple of ``block_size`` by
replicating the last token (a clamped index, nothing is copied). No gradient flows through the estimate.

On CUDA a fused Triton kernel (``_estimate_triton``) computes the same P without materialising the sampled
score matrix; the PyTorch version here is the reference and the CPU path.

``precision="fp8"`` computes the scores from e4m3 copies of the sampled tokens (a scale per sampled query and
one per sampled key block, amax / 448): on GPUs with fp8 tensor cores the estimate then costs about 60% of the
bf16 one, and it only ranks blocks, so the selection it leads to keeps the same attention mass (docs/BENCHMARKS.md).
"auto" picks fp8 where the fused kernel can run it, else bf16.

:func:`pool_block_rows` offers pooled rows instead of sampled tokens (``ASAConfig.estimate_tokens="pooled"``): each
block's ``num_keep`` rows are the means of its ``block_size/num_keep`` consecutive tokens, so the estimate sees every
token at the same cost; the pooled rows then go through the same estimate as blocks of ``num_keep`` rows, all kept.
"""

from __future__ import annotations

import logging
import math

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "ESTIMATE_PRECISIONS", "sample_offsets", "estimate_block_importance", "estimate_block_importance_reference",
    "quantise_sampled_reference", "pool_block_rows",
]

ESTIMATE_PRECISIONS = ("auto", "bf16", "fp8")
_FP8_MAX = 448.0  # largest finite e4m3 value

_HASH_MULT = 0x9E3779B1  # odd 32-bit golden-ratio constant: a cheap integer hash for jitter


def sample_offsets(
    batch: int, heads: int, num_keep: int, block_size: int, device: torch.device | str, seed: int = 0
) -> torch.Tensor:
    """Sampled positions inside a block, [B, H, num_keep] int32, sorted, same for all blocks of a (b, h).

    Stratified: the block is cut into ``num_keep`` equal windows and one position is taken per window, jittered
    by an integer hash of (seed, h, window). Deterministic (no RNG state is consumed), so a recomputation
    under gradient checkpointing rebuilds the same mask, and it covers each block evenly. The same for every
    sample of a batch, so a video's mask does not depend on its position in the batch (CFG halves, prompts).
    """
    if not 1 <= num_keep <= block_size:
        raise ValueError(f"num_keep={num_keep} must be in [1, block_size={block_size}].")
    bh = torch.arange(heads, device=device, dtype=torch.int64).view(1, heads, 1)
    j = torch.arange(num_keep, device=device, dtype=torch.int64).view(1, 1, num_keep)
    start = (j * block_size) // num_keep
    width = ((j + 1) * block_size) // num_keep - start
    key = (bh * 1_000_003 + j * 7919 + seed * 104_729 + 12_345) & 0xFFFFFFFF
    jitter = ((key * _HASH_MULT) & 0xFFFFFFFF) >> 16
    return (start + jitter % width).to(torch.int32).expand(batch, heads, num_keep).contiguous()


def _sample_rows(x: torch.Tensor, offsets: torch.Tensor, block_size: int) -> torch.Tensor:
    """x [B, H, L, D], offsets [B, H, S] -> sampled rows [B, H, nb, S, D] (replicate padding by clamping)."""
    b, h, length, d = x.shape
    nb = -(-length // block_size)
    s = offsets.shape[-1]
    idx = torch.arange(nb, device=x.device).view(1, 1, nb, 1) * block_size + offsets.view(b, h, 1, s).long()
    idx = idx.clamp_max(length - 1).view(b, h, nb * s, 1).expand(b, h, nb * s, d)
    return torch.gather(x, 2, idx).view(b, h, nb, s, d)


@torch.no_grad()
def pool_block_rows(x: torch.Tensor, num_keep: int, block_size: int) -> torch.Tensor:
    """x [B, H, L, D] -> [B, H, nb*num_keep, D] in x's dtype: row j of block i is the mean of tokens
    i*block_size + j*g ... + (j+1)*g - 1, g = block_size/num_keep (float32 accumulation). A last partial block is
    padded by replicating the last token, as the sampled estimate does."""
    if block_size % num_keep:
        raise ValueError(f"num_keep={num_keep} must divide block_size={block_size} for pooled rows.")
    b, h, length, d = x.shape
    nb, g = -(-length // block_size), block_size // num_keep
    full = length // block_size
    parts = []
    if full:
        body = x[:, :, : full * block_size].unflatten(2, (full * num_keep, g))
        parts.append(body.sum(dim=3, dtype=torch.float32).div_(g).to(x.dtype))
    if nb > full:
        idx = torch.arange(full * block_size, nb * block_size, device=x.device).clamp_max_(length - 1)
        tail = x.index_select(2, idx).unflatten(2, (num_keep, g))
        parts.append(tail.sum(dim=3, dtype=torch.float32).div_(g).to(x.dtype))
    return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]


@torch.no_grad()
def quantise_sampled_reference(
    x: torch.Tensor, offsets: torch.Tensor, block_size: int, per_block: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled rows of x as e4m3 [B, H, nb, S, D] and float32 scales [B, H, nb, S] (per row) or [B, H, nb].

    scale = amax / 448 over a sampled row (or, with ``per_block``, over a block's sampled rows), 1 where the amax
    is 0; values are multiplied by 1/scale and rounded to nearest even, as the fused kernel does.
    """
    xs = _sample_rows(x, offsets, block_size).float()
    amax = xs.abs().amax(dim=(-2, -1) if per_block else -1)
    scales = torch.where(amax > 0, amax / _FP8_MAX, torch.ones_like(amax))
    inv = (1.0 / scales)[..., None, None] if per_block else (1.0 / scales)[..., None]
    return (xs * inv).clamp(-_FP8_MAX, _FP8_MAX).to(torch.float8_e4m3fn), scales


def _dequantised_samples(x: torch.Tensor, offsets: torch.Tensor, block_size: int, per_block: bool) -> torch.Tensor:
    x8, scales = quantise_sampled_reference(x, offsets, block_size, per_block)
    return x8.float() * (scales[..., None, None] if per_block else scales[..., None])


@torch.no_grad()
def estimate_block_importance_reference(
    q: torch.Tensor, k: torch.Tensor, offsets: torch.Tensor, block_size: int, scale: float | None = None,
    precision: str = "bf16",
) -> torch.Tensor:
    """Row-normalised block importance P [B, H, nqb, nkb] float32 (plain PyTorch; materialises the scores).

    q [B, H, Lq, D], k [B, H, Lk, D], offsets [B, H, S] int (from :func:`sample_offsets`). ``precision``:
    "bf16" scores the tokens as given (in float32), "fp8" scores their quantised copies
    (:func:`quantise_sampled_reference`), which is what the fp8 kernel computes.
    """
    if precision not in ("bf16", "fp8"):
        raise ValueError(f"precision={precision!r} must be 'bf16' or 'fp8' for the reference estimate.")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if precision == "fp8":
        qs = _dequantised_samples(q, offsets, block_size, per_block=False)  # [B, H, nqb, S, D]
        ks = _dequantised_samples(k, offsets, block_size, per_block=True)  # [B, H, nkb, S, D]
    else:
        qs = _sample_rows(q, offsets, block_size).float()  # [B, H, nqb, S, D]
        ks = _sample_rows(k, offsets, block_size).float()  # [B, H, nkb, S, D]
    b, h, nqb, s, d = qs.shape
    nkb = ks.shape[2]
    scores = torch.matmul(qs.view(b, h, nqb * s, d), ks.view(b, h, nkb * s, d).transpose(-1, -2)) * scale
    row_max = scores.amax(dim=-1, keepdim=True)  # max over all sampled keys
    block_max = scores.view(b, h, nqb * s, nkb, s).amax(dim=-1)  # [B, H, nqb*S, nkb]
    p = torch.exp(block_max - row_max).view(b, h, nqb, s, nkb).amax(dim=3)  # max-pool over sampled queries
    return p / p.sum(dim=-1, keepdim=True)


@torch.no_grad()
def estimate_block_importance(
    q: torch.Tensor,
    k: torch.Tensor,
    offsets: torch.Tensor,
    block_size: int,
    scale: float | None = None,
    impl: str = "auto",
    precision: str = "auto",
) -> torch.Tensor:
    """Block importance P [B, H, nqb, nkb] float32, rows summing to 1.

    ``impl``: "torch" (reference), "triton" (fused CUDA kernel) or "auto" (Triton on CUDA when the sample count
    is a power of two >= 16 and Triton imports, else the reference). ``precision``: "bf16", "fp8" or "auto"
    (fp8 when the Triton kernel runs on a GPU with fp8 tensor cores, else bf16).
    """
    if impl not in ("auto", "torch", "triton"):
        raise ValueError(f"impl={impl!r} must be 'auto', 'torch' or 'triton'.")
    if precision not in ESTIMATE_PRECISIONS:
        raise ValueError(f"precision={precision!r} must be one of {ESTIMATE_PRECISIONS}.")
    if impl == "auto":
        impl = "triton" if _triton_usable(q, offsets.shape[-1], block_size) else "torch"
    if precision == "auto":
        precision = "fp8" if impl == "triton" and _fp8_usable(q) else "bf16"
    if impl == "torch":
        return estimate_block_importance_reference(q, k, offsets, block_size, scale, precision)
    if not _triton_usable(q, offsets.shape[-1], block_size):
        raise RuntimeError(
            "The Triton estimate needs CUDA tensors, the 'triton' package (pip install triton) and num_keep a power "
            f"of two >= 16 (got device={q.device}, num_keep={offsets.shape[-1]}); use impl='torch' otherwise."
        )
    from ._estimate_triton import estimate_block_importance_triton

    return estimate_block_importance_triton(q, k, offsets, block_size, scale, precision=precision)


def _triton_usable(q: torch.Tensor, num_keep: int, block_size: int) -> bool:
    if q.device.type != "cuda" or num_keep < 16 or num_keep & (num_keep - 1) or q.shape[-1] not in (32, 64, 128):
        return False
    from . import _estimate_triton

    return _estimate_triton.AVAILABLE


def _fp8_usable(q: torch.Tensor) -> bool:
    from . import _estimate_triton

    return q.is_cuda and _estimate_triton.fp8_supported(q.device)
