"""Token order along a 3D generalized Hilbert ("Gilbert") curve (BLADE Sec. 3.2, step 1).

A run of consecutive tokens on the curve is a compact 3D neighbourhood of the (T, H, W) grid, so a 128-token
block of the reordered sequence is a small brick of the video instead of a thin raster row. The curve works for
any box size (odd and non powers of two included): the box is split along its longest axes into sub-boxes
that are walked recursively, the split points nudged to even lengths so that the sub-walks can join by unit
steps; where a box's parities make that impossible the walk takes one diagonal step.

Permutations are computed once per grid on the CPU (cached) and copied to each device once (cached).
"""

from __future__ import annotations

import functools

import torch

__all__ = ["gilbert3d", "curve_permutation", "curve_permutation_on", "token_order"]

Vec = tuple[int, int, int]


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _add(*vs: Vec) -> Vec:
    return (sum(v[0] for v in vs), sum(v[1] for v in vs), sum(v[2] for v in vs))


def _neg(v: Vec) -> Vec:
    return (-v[0], -v[1], -v[2])


def _half(v: Vec) -> Vec:
    # floor division towards zero, so that halves of negative axes mirror the positive ones
    return (int(v[0] / 2), int(v[1] / 2), int(v[2] / 2))


def _length(v: Vec) -> int:
    return abs(v[0] + v[1] + v[2])


def _unit(v: Vec) -> Vec:
    return (_sign(v[0]), _sign(v[1]), _sign(v[2]))


def _walk(out: list[Vec], p: Vec, a: Vec, b: Vec, c: Vec) -> None:
    """Visit the box spanned by axis vectors a (major), b, c from corner p, ending at p + a - unit(a).

    Each axis vector points along one coordinate axis; its length is the box extent along it.
    """
    w, h, d = _length(a), _length(b), _length(c)
    if w == 0 or h == 0 or d == 0:
        return
    da, db, dc = _unit(a), _unit(b), _unit(c)
    # straight runs
    if h == 1 and d == 1:
        for i in range(w):
            out.append(_add(p, (da[0] * i, da[1] * i, da[2] * i)))
        return
    if w == 1 and d == 1:
        for i in range(h):
            out.append(_add(p, (db[0] * i, db[1] * i, db[2] * i)))
        return
    if w == 1 and h == 1:
        for i in range(d):
            out.append(_add(p, (dc[0] * i, dc[1] * i, dc[2] * i)))
        return

    a2, b2, c2 = _half(a), _half(b), _half(c)
    # make the halves even where the box is long enough, so sub-walks end next to where the next one starts
    if _length(a2) % 2 and w > 2:
        a2 = _add(a2, da)
    if _length(b2) % 2 and h > 2:
        b2 = _add(b2, db)
    if _length(c2) % 2 and d > 2:
        c2 = _add(c2, dc)
    a_rest = _add(a, _neg(a2))
    b_rest = _add(b, _neg(b2))
    c_rest = _add(c, _neg(c2))
    a_end = _add(a, _neg(da))  # offset of the last cell along a

    if 2 * w > 3 * h and 2 * w > 3 * d:
        # long along a: two halves side by side
        _walk(out, p, a2, b, c)
        _walk(out, _add(p, a2), a_rest, b, c)
    elif 3 * h > 4 * d:
        # thin along c: split a and b only (three sub-boxes, U shape in the a-b plane)
        _walk(out, p, b2, c, a2)
        _walk(out, _add(p, b2), a, b_rest, c)
        _walk(out, _add(p, a_end, b2, _neg(db)), _neg(b2), c, _neg(a_rest))
    elif 3 * d > 4 * h:
        # thin along b: split a and c only
        _walk(out, p, c2, a2, b)
        _walk(out, _add(p, c2), a, b, c_rest)
        _walk(out, _add(p, a_end, c2, _neg(dc)), _neg(c2), _neg(a_rest), b)
    else:
        # regular case: split all three axes (five sub-boxes, the 3D Hilbert pattern with merged octants)
        _walk(out, p, b2, c2, a2)
        _walk(out, _add(p, b2), c, a2, b_rest)
        _walk(out, _add(p, b2, _neg(db), c, _neg(dc)), a, _neg(b2), _neg(c_rest))
        _walk(out, _add(p, a_end, b2, c, _neg(dc)), _neg(c), _neg(a_rest), b_rest)
        _walk(out, _add(p, a_end, b2, _neg(db)), _neg(b2), c2, _neg(a_rest))


def gilbert3d(size_t: int, size_h: int, size_w: int) -> list[tuple[int, int, int]]:
    """All (t, h, w) cells of a T x H x W grid in generalized-Hilbert order, starting at (0, 0, 0)."""
    for name, n in (("T", size_t), ("H", size_h), ("W", size_w)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"grid {name}={n!r} must be a positive integer.")
    # coordinates are (w, h, t); the longest axis leads
    wv, hv, tv = (size_w, 0, 0), (0, size_h, 0), (0, 0, size_t)
    out: list[Vec] = []
    if size_w >= size_h and size_w >= size_t:
        _walk(out, (0, 0, 0), wv, hv, tv)
    elif size_h >= size_w and size_h >= size_t:
        _walk(out, (0, 0, 0), hv, wv, tv)
    else:
        _walk(out, (0, 0, 0), tv, wv, hv)
    return [(t, h, w) for (w, h, t) in out]


@functools.lru_cache(maxsize=64)
def curve_permutation(grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(perm, inverse) LongTensors on the CPU for a (T, H, W) grid, both of length T*H*W.

    ``x_curve = x_raster[..., perm, :]`` and ``x_raster = x_curve[..., inverse, :]``, where raster order is
    t-major, then h, then w (the order of the patch embeddings of Wan and CogVideoX).
    """
    t, h, w = (int(g) for g in grid)
    cells = gilbert3d(t, h, w)
    coords = torch.tensor(cells, dtype=torch.long)
    perm = coords[:, 0] * (h * w) + coords[:, 1] * w + coords[:, 2]
    n = t * h * w
    if perm.numel() != n or torch.unique(perm).numel() != n:  # a bug in the walk, never the user's fault
        raise RuntimeError(f"gilbert3d produced an invalid order for grid {grid}.")
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(n)
    perm.requires_grad_(False)
    return perm, inverse


@functools.lru_cache(maxsize=256)
def _on_device(grid: tuple[int, int, int], num_text_tokens: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    perm, inverse = curve_permutation(grid)
    n = perm.numel()
    if num_text_tokens:
        tail = torch.arange(n, n + num_text_tokens)
        perm, inverse = torch.cat([perm, tail]), torch.cat([inverse, tail])
    return perm.to(device), inverse.to(device)


def curve_permutation_on(
    grid: tuple[int, int, int], device: torch.device | str, num_text_tokens: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`curve_permutation` extended by ``num_text_tokens`` fixed tail positions, cached per device."""
    return _on_device(tuple(int(g) for g in grid), int(num_text_tokens), torch.device(device))


@functools.lru_cache(maxsize=256)
def _token_order(
    grid: tuple[int, int, int], num_text: int, device: torch.device, reorder: bool, text_first: bool
) -> tuple[torch.Tensor, torch.Tensor] | None:
    n = grid[0] * grid[1] * grid[2]
    if not reorder and not text_first:
        return None
    video = curve_permutation(grid)[0] if reorder else torch.arange(n)
    if text_first:  # input is [text, video]: gather the video first, then the text
        perm = torch.cat([video + num_text, torch.arange(num_text)])
    else:
        perm = torch.cat([video, torch.arange(n, n + num_text)])
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    return perm.to(device), inverse.to(device)


def token_order(
    grid: tuple[int, int, int],
    num_text_tokens: int,
    device: torch.device | str,
    reorder: bool = True,
    text_first: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(perm, inverse) taking a sequence to [video in curve order, text] and back; None if nothing moves.

    Input order: video tokens in raster order then text (``text_first=False``), or text then video.
    Cached per grid, text count, device and flags.
    """
    key = (tuple(int(g) for g in grid), int(num_text_tokens), torch.device(device), bool(reorder), bool(text_first))
    return _token_order(*key)
