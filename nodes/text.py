"""Text nodes: prompts -> BLADE_EMBEDS with the model's own encoder, or from ComfyUI's native CONDITIONING."""

from __future__ import annotations

import logging

import torch

from ..blade_ops.families import WAN, family_names
from . import comfy_bridge as bridge
from .types import BLADE_EMBEDS, BLADE_TEXT_ENCODER, CATEGORY

log = logging.getLogger(__name__)


class BladeTextEncode:
    """Encode a prompt and a negative prompt with the model's text encoder."""

    DESCRIPTION = (
        "Encodes the prompt (and the negative prompt, used only when the sampler's guidance is above 1) into "
        "BLADE embeddings, the way diffusers' Wan/CogVideoX pipelines do (Wan: 512 tokens, CogVideoX: 226)."
    )
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (BLADE_EMBEDS,)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("Prompt embeddings for BLADE Sampler.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "text_encoder": (BLADE_TEXT_ENCODER, {"tooltip": "From BLADE Text Encoder Loader."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What the video shows."}),
                "negative_prompt": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "",
                        "tooltip": "What to avoid; used only with guidance > 1 (baseline sampling). Empty: the "
                        "family's standard negative prompt (Wan's official one; CogVideoX none).",
                    },
                ),
            }
        }

    def encode(self, text_encoder, prompt: str, negative_prompt: str = "") -> tuple:
        from ..blade_ops.models import on_device
        from ..blade_ops.text import encode_prompts
        from ..blade_ops.validation import check_prompts

        check_prompts(prompt)  # the command line and GenerationRequest refuse the same prompts
        negative = negative_prompt if negative_prompt.strip() else text_encoder.family.default_negative_prompt
        bridge.free_comfy_memory()
        with bridge.oom_advice("encoding the prompt", "Load the text encoder with dtype bf16 or fp16."):
            with on_device(text_encoder.text_encoder, bridge.torch_device(), offload="model"):
                embeds = encode_prompts(text_encoder, prompt, negative, guidance=True)
        return (embeds.to("cpu"),)


def _conditioning_tensor(conditioning: list, length: int, label: str) -> torch.Tensor:
    """Stack a CONDITIONING list ([[tensor [B, L, D], {...}], ...]) into [N, length, D], zero-padded like diffusers."""
    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError(f"{label} is not a CONDITIONING (expected a non-empty list of [tensor, dict]).")
    rows = []
    for entry in conditioning:
        tensor, extra = entry[0], entry[1] if len(entry) > 1 else {}
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
            raise ValueError(f"{label} holds a {type(tensor).__name__}, expected a [batch, tokens, dim] tensor.")
        mask = extra.get("attention_mask") if isinstance(extra, dict) else None
        if isinstance(mask, torch.Tensor) and mask.shape[-1] == tensor.shape[1]:
            tensor = tensor * mask.reshape(tensor.shape[0], -1, 1).to(tensor.dtype)
        if tensor.shape[1] > length:
            log.warning("%s has %d tokens; keeping the first %d as the model expects.", label, tensor.shape[1], length)
            tensor = tensor[:, :length]
        pad = tensor.new_zeros(tensor.shape[0], length - tensor.shape[1], tensor.shape[2])
        rows.append(torch.cat([tensor, pad], dim=1))
    dims = {r.shape[-1] for r in rows}
    if len(dims) > 1:
        raise ValueError(f"{label} mixes embedding widths {sorted(dims)}; use one text encoder.")
    return torch.cat(rows).float()


class BladeConditioningToEmbeds:
    """Use ComfyUI's native text encoding (CLIPLoader type wan + CLIPTextEncode) with the BLADE sampler."""

    DESCRIPTION = (
        "Turns CONDITIONING from CLIPTextEncode into BLADE embeddings, so the UMT5 file ComfyUI already uses for "
        "Wan (CLIPLoader, type 'wan', e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors) works with BLADE Sampler. "
        "Embeddings are zero-padded to the family's text length (Wan 512), as diffusers does."
    )
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = (BLADE_EMBEDS,)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("Prompt embeddings for BLADE Sampler.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "From CLIPTextEncode with a Wan (UMT5) text encoder."}),
                "family": (
                    family_names(),
                    {"default": WAN.name,
                     "tooltip": "Model family the embeddings are for; sets the padded length."},
                ),
            },
            "optional": {
                "negative": (
                    "CONDITIONING",
                    {"tooltip": "Negative prompt, needed only when the sampler's guidance is above 1."},
                ),
            },
        }

    def convert(self, positive: list, family: str = WAN.name, negative: list | None = None) -> tuple:
        from ..blade_ops.families import get_family
        from ..blade_ops.text import PromptEmbeds

        length = get_family(family).max_text_tokens
        cond = _conditioning_tensor(positive, length, "positive")
        uncond = None
        if negative is not None:
            uncond = _conditioning_tensor(negative, length, "negative")
            if uncond.shape[0] == 1 and cond.shape[0] > 1:
                uncond = uncond.expand(cond.shape[0], -1, -1).clone()
            if uncond.shape != cond.shape:
                raise ValueError(f"negative {tuple(uncond.shape)} does not match positive {tuple(cond.shape)}.")
        return (PromptEmbeds(cond, uncond),)


NODES = {
    "BladeTextEncode": (BladeTextEncode, "BLADE Text Encode"),
    "BladeConditioningToEmbeds": (BladeConditioningToEmbeds, "BLADE Conditioning To Embeds"),
}
