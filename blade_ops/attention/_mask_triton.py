"""Fused CUDA kernels for the block mask: the per-row energy rule (BLADE Sec. 3.2, step 4; same result as
``mask.select_blocks``) and the conversion of a block mask into the ordered block lists a sparse kernel reads.

Energy rule:
One program per (batch*head, query-block row): load the row of P, sort it descending together with the column
indices (value bits and index packed in one int64 key: P >= 0, so its float bits order like integers; forced
text columns get +4 so they come first), cumulative sum, count with the crossing block, clamp, write the dense
mask, the ordered indices and the count. Replaces about fifteen small PyTorch launches.

Ordered block lists (:func:`ordered_blocks_triton`): per row of a [B, H, R, C] block mask, the kept columns split
into "partial" ones (a per-row or per-column flag says the block needs an element mask) and "full" ones, each as
(count, column list with the kept columns first in ascending order, then the others ascending): exactly what a
stable descending sort of the 0/1 row gives, from two prefix sums instead of two segmented sorts. Any strides, so
the transposed (query-side) lists come from the same kernel on a transposed view.

``AVAILABLE`` says whether Triton imported; importing this module never fails.
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


if AVAILABLE:

    @triton.jit
    def _write_ordered(sel, valid, row_ok, cols, NUM, IDX, row_ids, C):
        """Stable "kept first" order of one [ROWS, NC] 0/1 tile: counts and column lists."""
        kept = sel.to(tl.int32)
        rest = (valid & (sel == 0)).to(tl.int32)
        count = tl.sum(kept, axis=1)
        pos = tl.where(sel != 0, tl.cumsum(kept, axis=1) - 1, count[:, None] + tl.cumsum(rest, axis=1) - 1)
        dst = IDX + row_ids.to(tl.int64)[:, None] * C + pos
        tl.store(dst, (cols[None, :] + 0 * pos).to(tl.int32), mask=valid)
        tl.store(NUM + row_ids, count, mask=row_ok)

    @triton.jit
    def _ordered_blocks_kernel(
        MASK, ROW_PARTIAL, COL_PARTIAL, PART_NUM, PART_IDX, FULL_NUM, FULL_IDX,
        n_heads, R, C, sm_b, sm_h, sm_r, sm_c,
        NC: tl.constexpr, ROWS: tl.constexpr,
    ):
        pid = tl.program_id(0)
        row_tiles = tl.cdiv(R, ROWS)
        bh = pid // row_tiles
        b = bh // n_heads
        h = bh % n_heads
        rows = (pid % row_tiles) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, NC)
        row_ok = rows < R
        valid = row_ok[:, None] & (cols < C)[None, :]
        src = MASK + b.to(tl.int64) * sm_b + h.to(tl.int64) * sm_h + rows[:, None] * sm_r + cols[None, :] * sm_c
        kept = tl.load(src, mask=valid, other=0) != 0
        partial = (tl.load(ROW_PARTIAL + rows, mask=row_ok, other=0) != 0)[:, None] | (
            tl.load(COL_PARTIAL + cols, mask=cols < C, other=0) != 0
        )[None, :]
        row_ids = bh * R + rows
        _write_ordered(kept & partial, valid, row_ok, cols, PART_NUM, PART_IDX, row_ids, C)
        _write_ordered(kept & (partial == 0), valid, row_ok, cols, FULL_NUM, FULL_IDX, row_ids, C)


def ordered_blocks_triton(
    mask: torch.Tensor, row_partial: torch.Tensor, col_partial: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Partial and full block lists of a bool mask [B, H, R, C] (any strides).

    row_partial [R], col_partial [C] bool: block (r, c) is partial when either flag is set. Returns
    (partial counts [B, H, R] int32, partial columns [B, H, R, C] int32, full counts, full columns), each column
    list holding its kept columns first (ascending), then the others (ascending).
    """
    b, h, rows, cols = mask.shape
    m = mask.view(torch.int8) if mask.dtype == torch.bool else mask
    nc = max(16, triton.next_power_of_2(cols))
    tile_rows = max(1, min(16, 4096 // nc))
    part_num = torch.empty(b, h, rows, device=mask.device, dtype=torch.int32)
    full_num = torch.empty_like(part_num)
    part_idx = torch.empty(b, h, rows, cols, device=mask.device, dtype=torch.int32)
    full_idx = torch.empty_like(part_idx)
    grid = (b * h * triton.cdiv(rows, tile_rows),)
    _ordered_blocks_kernel[grid](
        m, row_partial.view(torch.int8), col_partial.view(torch.int8), part_num, part_idx, full_num, full_idx,
        h, rows, cols, m.stride(0), m.stride(1), m.stride(2), m.stride(3),
        NC=nc, ROWS=tile_rows, num_warps=4,
    )
    return part_num, part_idx, full_num, full_idx
