"""Prompt encoding with each family's tokenizer conventions.

- Wan2.1 (UMT5-XXL): prompts are cleaned (HTML entities, ftfy when installed, whitespace), tokenized to 512
  tokens with an attention mask, and every position after a prompt's true length is set to zero, since Wan's
  cross-attention sees all 512 positions.
- CogVideoX (T5-XXL): 226 tokens (the transformer's ``max_text_seq_length``), no attention mask, padding kept:
  the text tokens join the video tokens in self-attention and the model was trained on exactly this.
These match diffusers' WanPipeline / CogVideoXPipeline, so embeddings computed here or there are interchangeable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .models.bundle import ModelBundle

logger = logging.getLogger(__name__)

def text_sequence_length(bundle: ModelBundle) -> int:
    """Tokens per prompt the model expects: Wan 512; CogVideoX its transformer's max_text_seq_length (226)."""
    return bundle.family.text_length(bundle.transformer)


def _module_device(module: torch.nn.Module) -> torch.device:
    """Where the token ids must go: the input embedding's device (other blocks may be streamed, see placement)."""
    embeddings = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
    if embeddings is not None:
        return embeddings.weight.device
    return next(module.parameters()).device


@torch.no_grad()
def encode_text(bundle: ModelBundle, prompts: list[str], *, max_length: int | None = None) -> torch.Tensor:
    """Text embeddings [B, L, D] (float32 on the encoder's device) for B prompts; L = text_sequence_length."""
    bundle.require("text_encoder", "tokenizer")
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a list of strings, got {prompts!r}.")
    length = max_length or text_sequence_length(bundle)
    prompts = bundle.family.clean_prompts(prompts)
    tokens = bundle.tokenizer(
        prompts,
        padding="max_length",
        max_length=length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    device = _module_device(bundle.text_encoder)
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    full = bundle.tokenizer(prompts, padding="longest", return_tensors="pt").input_ids
    if full.shape[-1] > length:
        logger.warning("A prompt is longer than %d tokens and was truncated.", length)
    return bundle.family.encode_text(bundle.text_encoder, ids, mask).float()


@dataclass
class PromptEmbeds:
    """Conditional embeddings [B, L, D] and, when CFG is on, unconditional ones of the same shape."""

    cond: torch.Tensor
    uncond: torch.Tensor | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PromptEmbeds:
        move = lambda x: None if x is None else x.to(device=device, dtype=dtype)  # noqa: E731
        return PromptEmbeds(move(self.cond), move(self.uncond))


def _as_list(value: str | list[str], n: int | None, label: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    if not items or not all(isinstance(p, str) for p in items):
        raise ValueError(f"{label} must be a string or a non-empty list of strings, got {value!r}.")
    if n is not None and len(items) == 1 and n > 1:
        items = items * n
    if n is not None and len(items) != n:
        raise ValueError(f"{label} has {len(items)} entries but there are {n} prompts; give one or {n}.")
    return items


def encode_prompts(
    bundle: ModelBundle,
    prompts: str | list[str],
    negative: str | list[str] | None = None,
    *,
    guidance: bool = True,
    max_length: int | None = None,
) -> PromptEmbeds:
    """Encode B prompts and, if ``guidance``, B negative prompts (one string is repeated; None means "").

    Both go through the encoder in one batch. Returns embeddings on the text encoder's device.
    """
    prompts = _as_list(prompts, None, "prompt")
    n = len(prompts)
    if not guidance:
        return PromptEmbeds(encode_text(bundle, prompts, max_length=max_length))
    negatives = _as_list("" if negative is None else negative, n, "negative_prompt")
    both = encode_text(bundle, prompts + negatives, max_length=max_length)
    return PromptEmbeds(both[:n], both[n:])
