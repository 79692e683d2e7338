"""ASA, adaptive block-sparse attention: the one entry point every caller goes through (BLADE Sec. 3.2).

``asa_attention`` takes SDPA-shaped q, k, v [B, H, L, D] whose L = T*H*W video tokens in raster (t, h, w) order
are followed by ``num_text_tokens`` text tokens, and returns the attention output in the same order:

1. reorder the video tokens along the 3D Gilbert curve (cached permutation; text stays at the end);
2. estimate block importance from sampled tokens (fused Triton kernel on CUDA);
3. keep blocks per query-block row by the energy rule (text rows and columns always kept);
4. run the block-sparse kernel of the chosen backend;
5. global branch: K/V mean-pooled every ``sample_gap`` video tokens in curve order, attended by every query with
   a score bias ln(sample_gap) (each pooled token stands for sample_gap keys; the shorter last group gets the
   same bias, as in the reference), merged with the sparse part through the log-sum-exps; either folded into
   the same kernel call ("fold") or as a second call + LSE merge ("merge");
6. inverse-permute the output.

When the lower clamp keeps every block of every row (``min_ratio == 1``, or a sequence of a single block) nothing
lies outside the selection, so the global branch is skipped and ASA is exactly dense attention.

No diffusers or ComfyUI types appear here: the diffusers processors and a native ComfyUI override both call it.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field

import torch

from ._permute import permute_and_fold, permute_tokens, pool_kv
from .backends import KVBias, get_backend, resolve_backend
from .config import ASAConfig
from .curve import token_order
from .estimate import estimate_block_importance, pool_block_rows, sample_offsets
from .mask import BlockSelection, select_blocks, text_block_range

logger = logging.getLogger(__name__)

__all__ = ["ASAStats", "asa_attention", "asa_plan", "pool_kv", "merge_by_lse", "global_bias"]


@dataclass
class ASAStats:
    """Running density (mean kept-block fraction) over ASA calls, for logs and the UI.

    Densities are kept as device tensors and summed on read, so recording never forces a host sync.
    """

    calls: int = 0
    last: torch.Tensor | None = field(default=None, repr=False)  # density of the latest call (0-dim tensor)
    _pending: list[torch.Tensor] = field(default_factory=list, repr=False)
    _total: float = 0.0

    def record(self, density: torch.Tensor) -> None:
        self.calls += 1
        self.last = density.detach()
        self._pending.append(self.last)
        if len(self._pending) >= 256:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._total += float(torch.stack([d.float().cpu() for d in self._pending]).sum())
            self._pending.clear()

    @property
    def mean_density(self) -> float:
        """Mean kept-block fraction over all recorded calls (nan before the first call)."""
        self._flush()
        return self._total / self.calls if self.calls else float("nan")

    def reset(self) -> None:
        self.calls, self._total, self.last = 0, 0.0, None
        self._pending.clear()


@functools.lru_cache(maxsize=64)
def _offsets(batch: int, heads: int, num_keep: int, block_size: int, device: torch.device) -> torch.Tensor:
    return sample_offsets(batch, heads, num_keep, block_size, device)


@functools.lru_cache(maxsize=64)
def _all_rows(batch: int, heads: int, rows: int, device: torch.device) -> torch.Tensor:
    return torch.arange(rows, device=device, dtype=torch.int32).expand(batch, heads, rows).contiguous()


def global_bias(num_video: int, gap: int) -> tuple[float, int]:
    """(score bias ln(gap), number of pooled tokens) of the global branch (REFERENCE: n = sample_gap)."""
    return math.log(gap), -(-num_video // gap)


def merge_by_lse(
    out1: torch.Tensor, lse1: torch.Tensor, out2: torch.Tensor, lse2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine two softmax-attention parts over disjoint key sets: a = e^lse1 / (e^lse1 + e^lse2)."""
    lse = torch.logaddexp(lse1, lse2)
    w1 = torch.exp(lse1 - lse).unsqueeze(-1)
    w2 = torch.exp(lse2 - lse).unsqueeze(-1)
    out = w1 * out1.float() + w2 * out2.float()
    return out.to(out1.dtype), lse


def _pooled_attention(
    q: torch.Tensor,
    kp: torch.Tensor,
    vp: torch.Tensor,
    bias: float,
    scale: float,
    chunk: int = 8192,
    *,
    skip: torch.Tensor | None = None,
    block_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense attention of q [B, H, L, D] over pooled kp/vp [B, H, Np, D] with a score bias; float32 math.

    ``skip`` [B, H, ceil(L / block_size), Np] bool leaves pooled tokens out per query block. A row that leaves out
    every pooled token gets output 0 and LSE -inf, which :func:`merge_by_lse` weighs as nothing.
    """
    outs, lses = [], []
    kf, vf = kp.float(), vp.float()
    for start in range(0, q.shape[2], chunk):
        s = torch.matmul(q[:, :, start : start + chunk].float(), kf.transpose(-1, -2)) * scale + bias
        if skip is not None:
            rows = torch.arange(start, start + s.shape[2], device=q.device) // block_size
            s = s.masked_fill(skip[:, :, rows], float("-inf"))
            lse = torch.logsumexp(s, dim=-1)
            shift = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))  # rows with no pooled token left
        else:
            lse = shift = torch.logsumexp(s, dim=-1)
        outs.append(torch.matmul(torch.exp(s - shift.unsqueeze(-1)), vf))
        lses.append(lse)
    return torch.cat(outs, dim=2).to(q.dtype), torch.cat(lses, dim=2)


def pooled_blocks_kept(selection_dense: torch.Tensor, num_video: int, gap: int, block_size: int) -> torch.Tensor:
    """[B, H, nqb, Np] bool: whether each query-block row keeps the key block that pooled token j summarises.

    Pooled token j is the mean of curve-order video tokens [j * gap, min((j + 1) * gap, num_video)); a segment
    that straddles two blocks counts as the block holding its middle token.
    """
    starts = torch.arange(0, num_video, gap, device=selection_dense.device)
    stops = (starts + gap).clamp(max=num_video)
    blocks = ((starts + stops - 1) // 2) // block_size
    return selection_dense[..., blocks]


@dataclass
class ASAPlan:
    """What one ASA call decided (exposed for tests and benchmarks)."""

    selection: BlockSelection
    global_mode: str  # "off", "fold" or "merge"
    backend: str


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int, int], num_text: int):
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            "asa_attention expects q, k, v of shape [B, H, L, D] with equal B, H, L; got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}."
        )
    if len(grid) != 3 or any(int(g) < 1 for g in grid):
        raise ValueError(f"grid={grid} must be three positive integers (T, H, W).")
    num_video = int(grid[0]) * int(grid[1]) * int(grid[2])
    if num_text < 0 or num_video + num_text != q.shape[2]:
        raise ValueError(
            f"sequence length {q.shape[2]} != T*H*W ({num_video} for grid {tuple(grid)}) + num_text_tokens "
            f"({num_text})."
        )
    return num_video


def asa_plan(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    num_text_tokens: int,
    config: ASAConfig,
    impl: str = "auto",
) -> BlockSelection:
    """Estimate + rule on already reordered q, k [B, H, L, D]: the block selection ASA would use."""
    b, h, length, _ = q.shape
    bs = config.block_size
    nkb = -(-length // bs)
    s = config.num_keep
    if config.estimate_tokens == "pooled":  # every pooled row is kept: blocks of s rows, offsets 0..s-1
        qe, ke = pool_block_rows(q.detach(), s, bs), pool_block_rows(k.detach(), s, bs)
        offsets = _all_rows(b, h, s, q.device)
        importance = estimate_block_importance(qe, ke, offsets, s, scale=1.0 / math.sqrt(q.shape[-1]), impl=impl,
                                               precision=config.estimate_precision)
    else:
        offsets = _offsets(b, h, s, bs, q.device)
        importance = estimate_block_importance(
            q.detach(), k.detach(), offsets, bs, impl=impl, precision=config.estimate_precision
        )
    return select_blocks(
        importance,
        config.tau,
        config.min_blocks(nkb),
        config.max_blocks(nkb),
        first_text_block=text_block_range(length, num_text_tokens, bs),
        impl=impl,
    )


def asa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    grid: tuple[int, int, int],
    num_text_tokens: int,
    config: ASAConfig,
    backend: str,
    stats: ASAStats | None = None,
    text_first: bool = False,
    plan_out: list | None = None,
) -> torch.Tensor:
    """Adaptive block-sparse self-attention; q, k, v [B, H, L, D] -> out [B, H, L, D] (same token order).

    ``grid`` = (T, H, W) of the video tokens, which come first in raster order; ``num_text_tokens`` text tokens
    follow (``text_first=True``: the text tokens come first instead, as diffusers' CogVideoX concatenates them;
    they are moved to the end inside the same gather as the curve order). ``backend``: a registered name or
    "auto". ``stats`` accumulates the kept-block fraction.
    ``plan_out``: if a list is given, the call appends its :class:`ASAPlan` (tests, benchmarks).
    """
    num_video = _check_inputs(q, k, v, grid, num_text_tokens)
    name = resolve_backend(backend, q.device)
    kernel = get_backend(name, q.device)
    bs = config.block_size
    length = q.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1])

    # Skipped when the lower clamp alone keeps every key block (min_ratio 1, or a video of one block): nothing lies
    # outside the selection, so pooled tokens would only count attention mass twice.
    num_key_blocks = -(-length // bs)
    use_global = config.use_global and num_video > 0 and config.min_blocks(num_key_blocks) < num_key_blocks
    mode = "off"
    if use_global:
        mode = config.global_mode
        if mode == "auto":
            mode = "fold" if kernel.supports_kv_bias and not config.global_skips_kept else "merge"
        elif mode == "fold" and not kernel.supports_kv_bias:
            raise ValueError(
                f"global_mode='fold' needs a backend that supports a key bias; {name!r} does not. "
                "Use global_mode='merge' or 'auto'."
            )
    gap = config.sample_gap
    ln_gap, num_pooled = global_bias(num_video, gap)
    start = -(-length // bs) * bs

    order = token_order(tuple(grid), num_text_tokens, q.device, config.reorder, text_first)
    perm, inverse = order if order is not None else (None, None)
    if perm is not None:
        q = permute_tokens(q, perm, inverse)
    if mode == "fold":
        # keys/values land in the folded layout directly: [curve order | masked gap | pooled tokens]
        k2 = permute_and_fold(k, perm, inverse, num_video, gap, start)
        v2 = permute_and_fold(v, perm, inverse, num_video, gap, start)
        k, v = k2[:, :, :length], v2[:, :, :length]
    elif perm is not None:
        k, v = permute_tokens(k, perm, inverse), permute_tokens(v, perm, inverse)

    selection = asa_plan(q, k, num_text_tokens=num_text_tokens, config=config)
    if mode == "off":
        out, _ = kernel.fn(q, k, v, selection.dense, bs, scale)
    elif mode == "fold":
        out = _fold_call(kernel.fn, q, k2, v2, selection, bs, scale, ln_gap, length, start, num_pooled)
    else:
        kp, vp = pool_kv(k, num_video, gap), pool_kv(v, num_video, gap)
        out1, lse1 = kernel.fn(q, k, v, selection.dense, bs, scale)
        skip = pooled_blocks_kept(selection.dense, num_video, gap, bs) if config.global_skips_kept else None
        out2, lse2 = _pooled_attention(q, kp, vp, ln_gap, scale, skip=skip, block_size=bs)
        out, _ = merge_by_lse(out1, lse1, out2, lse2)

    if perm is not None:
        out = permute_tokens(out, inverse, perm)
    if stats is not None:
        stats.record(selection.density())
    if plan_out is not None:
        plan_out.append(ASAPlan(selection, mode, name))
    if out.shape[2] != length:  # defensive: kernels must return Lq rows
        raise RuntimeError(f"backend {name!r} returned {out.shape[2]} rows for {length} queries.")
    return out


def _fold_call(fn, q, k2, v2, selection, bs, scale, ln_gap, length, start, num_pooled) -> torch.Tensor:
    """One kernel call over [L tokens | masked gap up to nkb*bs | Np pooled tokens biased by ln(gap)].

    Every query-block row keeps every pooled block on top of its selected blocks.
    """
    b, h = q.shape[:2]
    npb = -(-num_pooled // bs)
    extra = selection.dense.new_ones(b, h, selection.dense.shape[2], npb)
    mask = torch.cat([selection.dense, extra], dim=-1)
    segments: list[tuple[int, int, float]] = []
    if start > length:
        segments.append((length, start, float("-inf")))
    segments.append((start, start + num_pooled, ln_gap))
    out, _ = fn(q, k2, v2, mask, bs, scale, kv_bias=KVBias(tuple(segments)))
    return out
