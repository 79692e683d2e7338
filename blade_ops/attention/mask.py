"""Per-row energy rule that turns block importance into a block mask (BLADE Sec. 3.2, step 4).

For every (batch, head, query-block row) the key blocks are sorted by importance P (descending) and the
smallest prefix whose cumulative mass reaches ``tau`` is kept, the block that crosses ``tau`` included (the
reference implementation drops it). The count is then clamped to [ceil(min_ratio*nkb), ceil(max_ratio*nkb)]
(ceil for both bounds: never fewer blocks than the ratio asks; always at least one).

Text tokens (CogVideoX) sit at the end of the sequence and are never sparsified: every block that holds a text
token is kept in every row (column) and keeps every key block (row). Their mass counts towards ``tau`` first;
the clamp applies to the video blocks the rule adds on top of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BlockSelection", "select_blocks", "text_block_range"]


@dataclass
class BlockSelection:
    """A block mask and the same selection as ordered indices (kept blocks first, most important first).

    dense: [B, H, nqb, nkb] bool; indices: [B, H, nqb, nkb] int32; counts: [B, H, nqb] int32.
    """

    dense: torch.Tensor
    indices: torch.Tensor
    counts: torch.Tensor

    def density(self) -> torch.Tensor:
        """Mean kept-block fraction (a 0-dim float tensor, no host sync)."""
        return self.dense.float().mean()


def text_block_range(length: int, num_text_tokens: int, block_size: int) -> int:
    """Index of the first block that holds a text token (== number of blocks when there is no text)."""
    nb = -(-length // block_size)
    if num_text_tokens <= 0:
        return nb
    return (length - num_text_tokens) // block_size


@torch.no_grad()
def select_blocks(
    importance: torch.Tensor,
    tau: float,
    min_blocks: int,
    max_blocks: int,
    first_text_block: int | None = None,
    impl: str = "auto",
) -> BlockSelection:
    """Apply the energy rule to P [B, H, nqb, nkb] (rows summing to 1) and return the kept blocks.

    ``first_text_block``: blocks with index >= this hold text tokens (square layout, same split for rows and
    columns); None or nkb for no text. ``impl``: "torch", "triton" (one fused CUDA kernel) or "auto".
    """
    if importance.dim() != 4:
        raise ValueError(f"importance must be [B, H, nqb, nkb]; got shape {tuple(importance.shape)}.")
    b, h, nqb, nkb = importance.shape
    if not 1 <= min_blocks <= max_blocks <= nkb:
        raise ValueError(f"need 1 <= min_blocks={min_blocks} <= max_blocks={max_blocks} <= nkb={nkb}.")
    if impl not in ("auto", "torch", "triton"):
        raise ValueError(f"impl={impl!r} must be 'auto', 'torch' or 'triton'.")
    if impl != "torch" and importance.is_cuda and nkb <= 4096:
        from . import _mask_triton

        if _mask_triton.AVAILABLE:
            dense, indices, counts = _mask_triton.select_blocks_triton(
                importance, tau, min_blocks, max_blocks, first_text_block
            )
            return BlockSelection(dense=dense, indices=indices, counts=counts)
    if impl == "triton":
        raise RuntimeError("The fused rule needs CUDA tensors and Triton (pip install triton); use impl='torch'.")
    p = importance.float()
    text_from = nkb if first_text_block is None else max(0, min(int(first_text_block), nkb))
    num_forced = nkb - text_from
    key = p
    if num_forced:
        # forced (text) columns sort first; their real mass still enters the cumulative sum
        forced_col = torch.arange(nkb, device=p.device) >= text_from
        key = p + forced_col.to(p.dtype) * 4.0
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    mass = torch.gather(p, -1, order).cumsum(dim=-1)
    # blocks before which the mass is still below tau: the crossing block is counted
    count = (mass < tau).sum(dim=-1) + 1
    # the forced (text) columns come first in the order; the clamp bounds the video blocks added after them
    count = (count - num_forced).clamp(min=min_blocks, max=max_blocks) + num_forced
    count = count.clamp(max=nkb)
    if num_forced and text_from < nqb:
        text_row = torch.arange(nqb, device=p.device) >= text_from
        count = torch.where(text_row, torch.full_like(count, nkb), count)
    rank = torch.arange(nkb, device=p.device)
    kept_sorted = rank < count.unsqueeze(-1)
    dense = torch.zeros_like(kept_sorted).scatter_(-1, order, kept_sorted)
    return BlockSelection(dense=dense, indices=order.to(torch.int32), counts=count.to(torch.int32))
