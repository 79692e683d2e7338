"""ASA in a Wan transformer's self-attention: the attention processor the Wan adapter installs (its ``attn1``)."""

from __future__ import annotations

import torch

from .asa_processor import ASAProcessorBase


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan rotary embedding on x [B, L, H, D] with interleaved (even, odd) pairs; cos/sin [1, L, 1, D]."""
    even, odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2).type_as(x)


class WanASAProcessor(ASAProcessorBase):
    """Self-attention (attn1) of a Wan block with ASA in place of SDPA: what diffusers' WanAttnProcessor does
    around the attention call (projections through ``attn.to_q`` etc. so peft LoRA layers apply, qk-norm, rotary,
    output projection), with ``handle.attend`` for the attention itself."""

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError(
                "WanASAProcessor replaces self-attention only (encoder_hidden_states=None, attention_mask=None); "
                "it was called with a cross-attention input or a mask."
            )
        if getattr(attn, "fused_projections", False):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query = query.unflatten(2, (attn.heads, -1))  # [B, L, H, D]
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = _rotate_pairs(query, *rotary_emb)
            key = _rotate_pairs(key, *rotary_emb)
        out = self.attend(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), 0, False)
        out = out.transpose(1, 2).flatten(2, 3).type_as(query)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)
