"""ASA in a CogVideoX transformer's joint text+video self-attention: the processor the CogVideoX adapter installs."""

from __future__ import annotations

import torch

from .asa_processor import ASAProcessorBase


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """CogVideoX rotary embedding on x [B, H, S, D] (interleaved pairs); cos/sin [S, D]."""
    real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(-2)
    cos, sin = cos.to(x.device)[None, None], sin.to(x.device)[None, None]
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class CogVideoXASAProcessor(ASAProcessorBase):
    """Joint text+video self-attention (attn1) of a CogVideoX block with ASA in place of SDPA: text tokens (first
    in diffusers' concatenation) are moved to the end inside ASA, kept dense, and moved back."""

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None:
            raise ValueError("CogVideoXASAProcessor does not take an attention_mask (CogVideoX passes none).")
        text_len = encoder_hidden_states.shape[1]
        states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch, length, _ = states.shape
        query, key, value = attn.to_q(states), attn.to_k(states), attn.to_v(states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, length, attn.heads, head_dim).transpose(1, 2)  # [B, H, L, D]
        key = key.view(batch, length, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, length, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            rotated_q = _rotate_pairs(query[:, :, text_len:], *image_rotary_emb)
            query = torch.cat([query[:, :, :text_len], rotated_q], dim=2)
            if not attn.is_cross_attention:
                rotated_k = _rotate_pairs(key[:, :, text_len:], *image_rotary_emb)
                key = torch.cat([key[:, :, :text_len], rotated_k], dim=2)
        out = self.attend(query, key, value, text_len, True)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        encoder_out, video_out = out.split([text_len, length - text_len], dim=1)
        return video_out, encoder_out
