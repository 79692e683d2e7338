"""Contract: the energy rule keeps, per query-block row, the smallest prefix of blocks (by importance) whose
mass reaches tau, the crossing block included, clamped to [min_blocks, max_blocks]; text rows and columns
(at the end of the sequence) are always kept."""

from __future__ import annotations

import pytest
import torch

from blade_ops.attention.mask import select_blocks, text_block_range


def _rows(*rows):
    p = torch.tensor(rows, dtype=torch.float32)
    return (p / p.sum(-1, keepdim=True)).view(1, 1, len(rows), -1)


def test_smallest_prefix_including_crossing_block():
    p = _rows([0.5, 0.1, 0.3, 0.05, 0.05], [0.05, 0.05, 0.05, 0.05, 0.8], [0.2, 0.2, 0.2, 0.2, 0.2])
    sel = select_blocks(p, tau=0.85, min_blocks=1, max_blocks=5)
    # row 0: 0.5 + 0.3 = 0.8 < 0.85, + 0.1 crosses -> 3 blocks (the reference would keep 2)
    assert sel.dense[0, 0, 0].tolist() == [True, True, True, False, False]
    # row 1: 0.8, then one 0.05 crosses 0.85 -> 2 blocks; ties broken by index
    assert sel.dense[0, 0, 1].tolist() == [True, False, False, False, True]
    # row 2: uniform, 0.2*5 = 1.0 needed for 0.85 -> 5 blocks
    assert sel.dense[0, 0, 2].sum() == 5
    assert sel.counts[0, 0].tolist() == [3, 2, 5]
    # ordered indices: kept blocks first, most important first
    assert sel.indices[0, 0, 0, :3].tolist() == [0, 2, 1]


def test_exact_tau_hit_stops():
    p = _rows([0.5, 0.25, 0.25, 0.0])
    assert select_blocks(p, tau=0.5, min_blocks=1, max_blocks=4).dense[0, 0, 0].tolist() == [True, False, False, False]


def test_clamps():
    p = _rows([0.97, 0.01, 0.01, 0.01, 0.0, 0.0], [0.1, 0.2, 0.15, 0.25, 0.2, 0.1])
    sel = select_blocks(p, tau=0.95, min_blocks=2, max_blocks=3)
    assert sel.counts[0, 0].tolist() == [2, 3]
    assert sel.dense[0, 0, 0].tolist() == [True, True, False, False, False, False]
    assert sel.dense[0, 0, 1].tolist() == [False, True, False, True, True, False]


def test_text_rows_and_columns_kept():
    torch.manual_seed(0)
    p = torch.rand(2, 3, 6, 6) ** 8
    p = p / p.sum(-1, keepdim=True)
    # 90 tokens of block 16: 6 blocks; the last 20 tokens are text -> blocks 4 and 5 hold text
    first = text_block_range(90, 20, 16)
    assert first == 4
    sel = select_blocks(p, tau=0.5, min_blocks=1, max_blocks=2, first_text_block=first)
    assert sel.dense[..., 4:].all()  # text columns in every row
    assert sel.dense[..., 4:, :].all()  # text rows see everything
    # video rows: the 2 text blocks plus 1 (min) to 2 (max) video blocks chosen by the rule
    assert ((sel.dense[..., :4, :4].sum(-1) >= 1) & (sel.dense[..., :4, :4].sum(-1) <= 2)).all()
    assert text_block_range(90, 0, 16) == 6


def test_text_mass_counts_first_and_clamp_bounds_video_blocks():
    # 4 blocks, block 3 holds text and carries most of the mass
    p = _rows([0.1, 0.05, 0.05, 0.8], [0.3, 0.3, 0.3, 0.1])
    sel = select_blocks(p, tau=0.85, min_blocks=1, max_blocks=2, first_text_block=3)
    assert sel.dense[0, 0, 0].tolist() == [True, False, False, True]  # 0.8 + 0.1 crosses: 1 video block
    assert sel.dense[0, 0, 1].tolist() == [True, True, False, True]  # needs 3 video blocks, capped at 2


def test_never_empty_and_consistent():
    torch.manual_seed(1)
    p = torch.softmax(torch.randn(2, 2, 9, 9) * 4, dim=-1)
    sel = select_blocks(p, tau=0.9, min_blocks=1, max_blocks=9)
    assert (sel.dense.sum(-1) >= 1).all()
    assert torch.equal(sel.dense.sum(-1).int(), sel.counts)
    assert sel.dense.dtype == torch.bool and sel.indices.dtype == torch.int32


@pytest.mark.gpu
@pytest.mark.parametrize("nkb, text_from", [(256, None), (139, 137), (20, 19)])
def test_triton_rule_matches_torch(nkb, text_from):
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(2, 3, nkb, nkb, device="cuda") * 3, dim=-1)
    ref = select_blocks(p, 0.95, 3, max(3, nkb // 6), first_text_block=text_from, impl="torch")
    out = select_blocks(p, 0.95, 3, max(3, nkb // 6), first_text_block=text_from, impl="triton")
    assert (out.counts == ref.counts).float().mean() > 0.999
    assert (out.dense == ref.dense).float().mean() > 0.999
    assert torch.equal(out.dense.sum(-1).int(), out.counts)
