"""Contract: the Gilbert curve order is a permutation of any (T, H, W) grid, its inverse restores raster order,
and consecutive tokens are 3D neighbours (mostly unit steps; 128-token chunks are compact bricks)."""

from __future__ import annotations

import pytest
import torch

from blade_ops.attention.curve import curve_permutation, curve_permutation_on, gilbert3d, token_order

GRIDS = [(13, 30, 45), (21, 30, 52), (1, 1, 1), (1, 1, 7), (3, 5, 7), (2, 3, 2), (1, 30, 52), (9, 1, 4), (4, 4, 4)]


def _coords(perm: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    _, h, w = grid
    return torch.stack([perm // (h * w), (perm // w) % h, perm % w], dim=1)


@pytest.mark.parametrize("grid", GRIDS)
def test_permutation_and_inverse(grid):
    perm, inverse = curve_permutation(grid)
    n = grid[0] * grid[1] * grid[2]
    assert perm.dtype == torch.long and perm.shape == (n,)
    assert torch.equal(torch.sort(perm).values, torch.arange(n))
    x = torch.randn(2, 3, n, 4)
    assert torch.equal(x[:, :, perm][:, :, inverse], x)
    assert torch.equal(perm[inverse], torch.arange(n))


@pytest.mark.parametrize("grid", [(13, 30, 45), (21, 30, 52)])
def test_locality(grid):
    perm, _ = curve_permutation(grid)
    c = _coords(perm, grid)
    steps = (c[1:] - c[:-1]).abs().sum(dim=1)
    assert (steps == 1).float().mean() > 0.98
    assert steps.max() <= 3

    def mean_extent(coords: torch.Tensor) -> float:
        n = coords.shape[0] // 128 * 128
        chunks = coords[:n].view(-1, 128, 3)
        return float((chunks.amax(1) - chunks.amin(1) + 1).sum(-1).float().mean())

    raster = _coords(torch.arange(perm.numel()), grid)
    curve_extent, raster_extent = mean_extent(c), mean_extent(raster)
    # raster chunks are thin rows spanning the whole width; curve chunks are compact bricks
    assert curve_extent < 0.5 * raster_extent, (curve_extent, raster_extent)
    assert curve_extent < 20


def test_starts_at_origin_and_is_cached():
    assert gilbert3d(3, 4, 5)[0] == (0, 0, 0)
    assert curve_permutation((5, 6, 7))[0] is curve_permutation((5, 6, 7))[0]
    a = curve_permutation_on((5, 6, 7), "cpu")
    assert a[0] is curve_permutation_on((5, 6, 7), torch.device("cpu"))[0]


def test_token_order_with_text():
    grid, nt = (2, 3, 4), 5
    n = 24
    perm, inverse = token_order(grid, nt, "cpu")
    assert torch.equal(perm[n:], torch.arange(n, n + nt))
    perm_tf, inv_tf = token_order(grid, nt, "cpu", text_first=True)
    x = torch.arange(n + nt)
    text_first = torch.cat([x[n:], x[:n]])  # [text, video]
    assert torch.equal(text_first[perm_tf], x[perm])  # same target order from either input layout
    assert torch.equal(text_first[perm_tf][inv_tf], text_first)
    assert token_order(grid, nt, "cpu", reorder=False) is None


@pytest.mark.parametrize("bad", [(0, 3, 4), (2, -1, 3)])
def test_bad_grid(bad):
    with pytest.raises(ValueError, match="must be a positive integer"):
        gilbert3d(*bad)
