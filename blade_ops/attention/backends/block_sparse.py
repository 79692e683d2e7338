"""``block_sparse_attn`` backend: mit-han-lab's Block-Sparse-Attention CUDA kernel (the BLADE reference kernel).

Not on PyPI; build it from https://github.com/mit-han-lab/Block-Sparse-Attention. Its API takes packed
(varlen) tensors [total_tokens, H, D] with cumulative sequence lengths, a per-head type (1 = block-sparse)
and a [B, H, ceil(Lq/128), ceil(Lk/128)] bool mask; block size is fixed at 128. The LSE it returns carries no
gradient, so with the global branch merged by LSE the gradient through the merge weights is dropped (as in the
reference); the ``flex`` backend folds the global branch into the kernel instead and has exact gradients.
"""

from __future__ import annotations

import logging

import torch

from . import _has, register

logger = logging.getLogger(__name__)

AVAILABLE = _has("block_sparse_attn")
INSTALL_HINT = (
    "the 'block_sparse_attn' package is not installed and is not on PyPI; build it from "
    "https://github.com/mit-han-lab/Block-Sparse-Attention (git clone, then pip install --no-build-isolation .)"
)


@register("block_sparse_attn", available=AVAILABLE, install_hint=INSTALL_HINT, devices=("cuda",))
def block_sparse_attn_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    block_size: int,
    scale: float,
    *,
    kv_bias: object | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, H, Lq, D], lse [B, H, Lq] float32) with ``block_sparse_attn_func``."""
    if kv_bias is not None:
        raise ValueError("backend 'block_sparse_attn' does not support kv_bias; use global_mode='merge'.")
    if block_size != 128:
        raise ValueError(f"backend 'block_sparse_attn' has a fixed block size of 128; got block_size={block_size}.")
    from block_sparse_attn import block_sparse_attn_func

    b, h, len_q, d = q.shape
    len_k = k.shape[2]
    dev = q.device
    q_packed = q.transpose(1, 2).reshape(b * len_q, h, d)
    k_packed = k.transpose(1, 2).reshape(b * len_k, h, d)
    v_packed = v.transpose(1, 2).reshape(b * len_k, h, d)
    cu_q = torch.arange(0, b + 1, device=dev, dtype=torch.int32) * len_q
    cu_k = torch.arange(0, b + 1, device=dev, dtype=torch.int32) * len_k
    head_mask_type = torch.ones(h, device=dev, dtype=torch.int32)  # every head block-sparse
    streaming_info = torch.zeros(2 * h, device=dev, dtype=torch.int32)  # unused for block-sparse heads
    out, lse, _ = block_sparse_attn_func(
        q_packed, k_packed, v_packed, cu_q, cu_k, head_mask_type, streaming_info, block_mask.contiguous(),
        len_q, len_k, 0.0, deterministic=False, softmax_scale=scale, is_causal=False, return_attn_probs=True,
    )
    out = out.view(b, len_q, h, d).transpose(1, 2)
    return out, lse[..., :len_q].float()
