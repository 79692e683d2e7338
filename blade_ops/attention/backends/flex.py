"""``flex`` backend: torch FlexAttention over a BlockMask built from the ASA block mask (BLADE Sec. 3.2, step 5).

The BlockMask is built on the device without Python loops: blocks whose keys are all valid are "full" blocks (no
mask_mod evaluated), the block that holds the sequence tail, and blocks touching a masked key range, are
"partial" blocks with a mask_mod. On CUDA one Triton launch per side writes both block lists from prefix sums
(the query-side lists only when a backward is needed); elsewhere stable sorts give the same lists.

On CUDA the kernel is torch.compile'd once per shape and layout (forward and backward, returns the LSE). On CPU
it runs eagerly (compiled CPU FlexAttention is inference-only and has no LSE; eager CPU FlexAttention has no
backward); eager FlexAttention reads only the mask_mod, so there the mask_mod also looks the block selection up.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import torch

from . import KVBias, register

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    AVAILABLE = True
except ImportError:  # torch < 2.5
    BlockMask = flex_attention = None
    AVAILABLE = False

try:
    from torch.nn.attention.flex_attention import AuxRequest
except ImportError:  # torch < 2.9: the return_lse flag
    AuxRequest = None

_COMPILED: dict[tuple, Callable] = {}
# Kernel options per head dim for the compiled CUDA kernel (None: PyTorch's defaults). On Hopper the TMA loads
# made the forward 3-7% faster at the Wan and CogVideoX shapes (benchmarks/attention.py --variants), while the
# CogVideoX forward+backward got 6% slower, so they are used for forward-only calls (sampling). At head dim 64
# (CogVideoX) smaller tiles with 4 warps and 3 stages were another 2-5% faster; at 128 they were slower.
KERNEL_OPTIONS: dict[int, dict | None] = {}
_HOPPER_OPTIONS: dict | None = {"USE_TMA": True}
_HOPPER_FORWARD_OPTIONS: dict[int, dict] = {
    64: {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3, "USE_TMA": True},
}


def _options(q: torch.Tensor, needs_grad: bool) -> dict | None:
    if q.device.type != "cuda":
        return None
    if q.shape[-1] in KERNEL_OPTIONS:
        return KERNEL_OPTIONS[q.shape[-1]]
    hopper = torch.cuda.get_device_capability(q.device)[0] == 9
    if not hopper or needs_grad:
        return None
    return _HOPPER_FORWARD_OPTIONS.get(q.shape[-1], _HOPPER_OPTIONS)


def _ordered(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., n] bool -> (count [...] int32, indices [..., n] int32 with the True columns first, ascending)."""
    m = mask.to(torch.uint8)
    idx = torch.sort(m, dim=-1, descending=True, stable=True).indices
    return m.sum(dim=-1, dtype=torch.int32), idx.to(torch.int32).contiguous()


@functools.lru_cache(maxsize=256)
def _mods(len_k: int, bias: KVBias | None) -> tuple[Callable, Callable | None, tuple[tuple[int, int], ...]]:
    """mask_mod (tail and -inf ranges), score_mod (finite ranges) and the masked key ranges, cached per layout."""
    masked = tuple((a, b) for a, b, val in (bias.segments if bias else ()) if val == float("-inf"))
    shifts = tuple((a, b, val) for a, b, val in (bias.segments if bias else ()) if math.isfinite(val) and val)

    def mask_mod(b, h, q_idx, kv_idx):
        keep = kv_idx < len_k
        for start, stop in masked:
            keep = keep & ((kv_idx < start) | (kv_idx >= stop))
        return keep

    score_mod = None
    if shifts:

        def score_mod(score, b, h, q_idx, kv_idx):
            for start, stop, val in shifts:
                inside = (kv_idx >= start) if stop >= len_k else (kv_idx >= start) & (kv_idx < stop)
                score = torch.where(inside, score + val, score)
            return score

    return mask_mod, score_mod, masked


def _with_block_lookup(mask_mod: Callable, block_mask: torch.Tensor, block_size: int) -> Callable:
    def exact_mask_mod(b, h, q_idx, kv_idx):
        return mask_mod(b, h, q_idx, kv_idx) & block_mask[b, h, q_idx // block_size, kv_idx // block_size]

    return exact_mask_mod


@functools.lru_cache(maxsize=256)
def _partial_columns(
    nkb: int, block_size: int, len_k: int, masked_ranges: tuple[tuple[int, int], ...], device: torch.device
) -> torch.Tensor:
    """[nkb] bool: key blocks that need the mask_mod (the tail block and blocks touching a masked range)."""
    cols = torch.arange(nkb, device=device)
    partial = (cols + 1) * block_size > len_k
    for start, stop in masked_ranges:
        partial |= (cols * block_size < stop) & ((cols + 1) * block_size > start)
    return partial


def _use_triton_lists(block_mask: torch.Tensor) -> bool:
    if not block_mask.is_cuda or block_mask.shape[-1] > 8192 or block_mask.shape[-2] > 8192:
        return False
    from .. import _mask_triton

    return _mask_triton.AVAILABLE


def build_flex_block_mask(
    block_mask: torch.Tensor,
    block_size: int,
    len_q: int,
    len_k: int,
    mask_mod: Callable,
    masked_ranges: tuple[tuple[int, int], ...] = (),
    with_backward: bool = True,
) -> BlockMask:
    """BlockMask from a [B, H, nqb, nkb] bool block mask; q-side indices only when a backward is needed.

    On CUDA one Triton launch per side writes the block lists (prefix sums, no sort); elsewhere two stable sorts
    per side give the same lists.
    """
    nqb, nkb = block_mask.shape[-2:]
    partial = _partial_columns(nkb, block_size, len_k, tuple(masked_ranges), block_mask.device)
    if _use_triton_lists(block_mask):
        from .._mask_triton import ordered_blocks_triton

        no_rows = _no_partial(nqb, block_mask.device)
        kv_num, kv_idx, full_num, full_idx = ordered_blocks_triton(block_mask, no_rows, partial)
        if with_backward:
            q_lists = ordered_blocks_triton(block_mask.transpose(-1, -2), partial, no_rows)
    else:
        part = block_mask & partial
        full = block_mask & ~partial
        kv_num, kv_idx = _ordered(part)
        full_num, full_idx = _ordered(full)
        if with_backward:
            q_lists = (*_ordered(part.transpose(-1, -2)), *_ordered(full.transpose(-1, -2)))
    bm = BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block_size, mask_mod=mask_mod,
        seq_lengths=(len_q, len_k), compute_q_blocks=False,
    )
    if with_backward:
        bm.q_num_blocks, bm.q_indices, bm.full_q_num_blocks, bm.full_q_indices = q_lists
    return bm


@functools.lru_cache(maxsize=64)
def _no_partial(n: int, device: torch.device) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.bool, device=device)


def compile_limit_context():
    """Raise dynamo's per-function recompile limit while calling compiled FlexAttention.

    Every compiled wrapper of ``flex_attention`` shares one code object, so each (shape, layout, dtype) is a cache
    entry of that function; the default limit of 8 is reached by a few resolutions with and without gradients.
    """
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    return cfg.patch(**{name: max(64, getattr(cfg, name))})


def _kernel(device: torch.device, key: tuple) -> Callable:
    if device.type != "cuda" or torch.compiler.is_compiling():
        return flex_attention  # eager on CPU; inside an outer torch.compile the graph compiles it anyway
    fn = _COMPILED.get(key)
    if fn is None:
        fn = torch.compile(flex_attention, dynamic=False, fullgraph=True)
        _COMPILED[key] = fn
    return fn


@register(
    "flex",
    available=AVAILABLE,
    install_hint="needs torch.nn.attention.flex_attention (PyTorch >= 2.5): pip install -U torch",
    supports_kv_bias=True,
)
def flex_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    block_size: int,
    scale: float,
    *,
    kv_bias: KVBias | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, H, Lq, D], lse [B, H, Lq] float32) with FlexAttention; see the registry for the contract."""
    len_q, len_k = q.shape[-2], k.shape[-2]
    mask_mod, score_mod, masked = _mods(len_k, kv_bias)
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if needs_grad and q.device.type != "cuda":
        raise RuntimeError(
            "The 'flex' backend has no backward pass on CPU (PyTorch FlexAttention limitation); use backend='torch' "
            "for training on CPU."
        )
    if q.device.type != "cuda":
        # eager FlexAttention evaluates only mask_mod (block sparsity is a hint for the compiled kernel), so the
        # block selection itself must be part of mask_mod there
        mask_mod = _with_block_lookup(mask_mod, block_mask, block_size)
    bm = build_flex_block_mask(block_mask, block_size, len_q, len_k, mask_mod, masked, with_backward=needs_grad)
    options = _options(q, needs_grad)
    key = (tuple(q.shape), tuple(k.shape), q.dtype, len_k, kv_bias, block_size, q.device, str(options))
    fn = _kernel(q.device, key)
    with warnings.catch_warnings(), compile_limit_context():
        # eager (CPU) FlexAttention warns that it is unfused on every call: that is this path's known cost
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        if AuxRequest is not None:
            out, aux = fn(
                q, k, v, score_mod=score_mod, block_mask=bm, scale=scale, kernel_options=options,
                return_aux=AuxRequest(lse=True),
            )
            lse = aux.lse
        else:
            out, lse = fn(
                q, k, v, score_mod=score_mod, block_mask=bm, scale=scale, kernel_options=options, return_lse=True
            )
    return out, lse.float()
