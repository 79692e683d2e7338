"""``torch`` backend: dense attention with the token mask expanded from the block mask.

The oracle for the kernels and the CPU path (BLADE Sec. 3.2, step 5). Scores are formed in float32, the
log-sum-exp is explicit, autograd works. Memory is O(Lq * Lk): meant for tests and small inputs.
"""

from __future__ import annotations

import torch

from . import KVBias, register


def expand_block_mask(block_mask: torch.Tensor, block_size: int, len_q: int, len_k: int) -> torch.Tensor:
    """[B, H, nqb, nkb] bool -> token mask [B, H, Lq, Lk] bool."""
    m = block_mask.repeat_interleave(block_size, dim=-2)[..., :len_q, :]
    return m.repeat_interleave(block_size, dim=-1)[..., :len_k]


@register("torch", available=True, install_hint="ships with PyTorch", supports_kv_bias=True)
def torch_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    block_size: int,
    scale: float,
    *,
    kv_bias: KVBias | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, H, Lq, D], lse [B, H, Lq] float32) over the kept blocks; see the registry for the contract."""
    len_q, len_k = q.shape[-2], k.shape[-2]
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if kv_bias is not None:
        scores = scores + kv_bias.to_tensor(len_k, q.device)
    keep = expand_block_mask(block_mask, block_size, len_q, len_k)
    scores = scores.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse.unsqueeze(-1))
    out = torch.matmul(probs, v.float())
    return out.to(q.dtype), lse
