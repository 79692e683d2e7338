"""BLADE embeddings as ComfyUI CONDITIONING, so a text encoder loaded by the pack can drive core's samplers.

The reverse of BLADE Conditioning To Embeds: a UMT5 from a diffusers folder or any width the pack's text-encoder
loader reads (core's CLIPLoader builds Wan's UMT5 only at XXL geometry) feeds KSampler and SamplerCustomAdvanced.
"""

from __future__ import annotations

from .types import BLADE_EMBEDS, CATEGORY


class BladeEmbedsToConditioning:
    """Positive and negative CONDITIONING from BLADE Text Encode's embeddings."""

    DESCRIPTION = (
        "Turns BLADE embeddings (BLADE Text Encode) into positive and negative CONDITIONING for ComfyUI's own "
        "samplers with a Wan model from ComfyUI's loaders. The negative is the prompt's negative (the family's "
        "default negative prompt when it was left empty)."
    )
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("The prompt.", "The negative prompt (for CFG above 1).")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"embeds": (BLADE_EMBEDS, {"tooltip": "From BLADE Text Encode."})}}

    def convert(self, embeds) -> tuple:
        cond = embeds.cond
        uncond = embeds.uncond if embeds.uncond is not None else embeds.cond.new_zeros(embeds.cond.shape)
        return ([[cond, {}]], [[uncond, {}]])


NODES = {"BladeEmbedsToConditioning": (BladeEmbedsToConditioning, "BLADE Embeds To Conditioning")}
