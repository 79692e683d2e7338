"""Fused CUDA kernel for the per-row energy rule (BLADE Sec. 3.2, step 4); same result as ``mask.select_blocks``.

One program per (batch*head, query-block row): load the row of P, sort it descending together with the column
indices (value bits and index packed in one int64 key: P >= 0, so its float bits order like integers; forced
text columns get +4 so they come first), cumulative sum, count with the crossing block, clamp, write the dense
mask, the ordered indices and the count. Replaces about fifteen small PyTorch launches. ``AVAILABLE`` says
whether Triton imported; importing this module never fails.
"""

from __future__ import annotations

import importlib.util

import torch

AVAILABLE = importlib.util.find_spec("triton") is not None
if AVAILABLE:
    try:
        import triton
        import triton.language as tl
    except ImportError:
        AVAILABLE = False

if AVAILABLE:

    @triton.jit
    def _energy_rule_kernel(
        P, DENSE, IDX, CNT,
        nqb, nkb, text_from, tau, min_blocks, max_blocks,
        NK: tl.constexpr,
    ):
        row = tl.program_id(0)  # over B*H*nqb
        qb = row % nqb
        cols = tl.arange(0, NK)
        valid = cols < nkb
        base = row.to(tl.int64) * nkb
        p = tl.load(P + base + cols, mask=valid, other=0.0)
        forced = valid & (cols >= text_from)
        key = tl.where(forced, p + 4.0, p)
        key = tl.where(valid, key, -1.0)
        bits = key.to(tl.int32, bitcast=True).to(tl.int64)
        packed = (bits << 32) | (NK - 1 - cols).to(tl.int64)  # ties: lower column first
        packed = tl.sort(packed, 0, descending=True)
        order = (NK - 1 - (packed & 0xFFFFFFFF)).to(tl.int32)
        ranks = cols
        in_range = ranks < nkb
        p_sorted = tl.load(P + base + order, mask=in_range, other=0.0)
        mass = tl.cumsum(p_sorted, 0)
        count = tl.sum((in_range & (mass < tau)).to(tl.int32), 0) + 1
        num_forced = nkb - text_from
        count = tl.minimum(tl.maximum(count - num_forced, min_blocks), max_blocks) + num_forced
        count = tl.minimum(count, nkb)
        count = tl.where(qb >= text_from, nkb, count)
        kept = ranks < count
        tl.store(DENSE + base + order, kept.to(tl.int8), mask=in_range)
        tl.store(IDX + base + ranks, order, mask=in_range)
        tl.store(CNT + row, count)


def select_blocks_triton(
    importance: torch.Tensor, tau: float, min_blocks: int, max_blocks: int, first_text_block: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dense bool [B, H, nqb, nkb], indices int32 [B, H, nqb, nkb], counts int32 [B, H, nqb])."""
    b, h, nqb, nkb = importance.shape
    p = importance.float().contiguous()
    text_from = nkb if first_text_block is None else max(0, min(int(first_text_block), nkb))
    dense = torch.empty(b, h, nqb, nkb, device=p.device, dtype=torch.int8)
    idx = torch.empty(b, h, nqb, nkb, device=p.device, dtype=torch.int32)
    cnt = torch.empty(b, h, nqb, device=p.device, dtype=torch.int32)
    nk = max(16, triton.next_power_of_2(nkb))
    _energy_rule_kernel[(b * h * nqb,)](
        p, dense, idx, cnt, nqb, nkb, text_from, float(tau), int(min_blocks), int(max_blocks),
        NK=nk, num_warps=4 if nk <= 512 else 8,
    )
    return dense.view(torch.bool), idx, cnt
