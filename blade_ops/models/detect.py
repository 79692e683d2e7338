"""Recognise what a weight file holds from its key names alone (no tensor is loaded).

A single file can be a Wan or CogVideoX transformer or VAE in one of several key layouts, possibly under a
prefix (ComfyUI stores ``model.diffusion_model.*`` for the diffusion model and ``first_stage_model.*`` or
``vae.*`` for the VAE). Files of other families are recognised well enough to say what they look like.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..families import COGVIDEOX, WAN, get_family

# Prefixes under which a part may be stored; the empty prefix comes last so a prefixed subset wins.
TRANSFORMER_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "model.", "")
VAE_PREFIXES = ("first_stage_model.", "vae.", "")


@dataclass(frozen=True)
class Sniff:
    """What a file holds: ``family`` (a family name), ``part`` ("transformer"/"vae"), key ``layout``."""

    family: str
    part: str
    layout: str  # "original" (Wan repo / ComfyUI), "diffusers", "sat" (CogVideoX SwissArmyTransformer)
    prefix: str  # stripped from every key of the part

    @property
    def description(self) -> str:
        return f"{get_family(self.family).label} {self.part} ({self.layout} key layout)"


def _has(keys: set[str], prefix: str, *names: str) -> bool:
    return all(prefix + n in keys for n in names)


_SIGNATURES: tuple[tuple[str, str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    # family, part, layout, required keys, prefixes
    (
        WAN.name,
        "transformer",
        "original",
        ("patch_embedding.weight", "blocks.0.self_attn.q.weight"),
        TRANSFORMER_PREFIXES,
    ),
    (
        WAN.name,
        "transformer",
        "diffusers",
        ("patch_embedding.weight", "condition_embedder.time_embedder.linear_1.weight"),
        TRANSFORMER_PREFIXES,
    ),
    (
        COGVIDEOX.name,
        "transformer",
        "diffusers",
        ("patch_embed.proj.weight", "patch_embed.text_proj.weight", "transformer_blocks.0.norm1.linear.weight"),
        TRANSFORMER_PREFIXES,
    ),
    (
        COGVIDEOX.name,
        "transformer",
        "sat",
        ("mixins.patch_embed.proj.weight", "transformer.layers.0.attention.query_key_value.weight"),
        TRANSFORMER_PREFIXES,
    ),
    (WAN.name, "vae", "original", ("decoder.middle.0.residual.0.gamma", "encoder.conv1.weight"), VAE_PREFIXES),
    (
        WAN.name, "vae", "diffusers", ("decoder.mid_block.resnets.0.norm1.gamma", "encoder.conv_in.weight"),
        VAE_PREFIXES,
    ),
    (
        COGVIDEOX.name,
        "vae",
        "diffusers",
        (
            "encoder.conv_in.conv.weight",
            "decoder.conv_in.conv.weight",
            "decoder.mid_block.resnets.0.norm1.conv_y.conv.weight",
        ),
        VAE_PREFIXES,
    ),
)


def sniff(keys: Iterable[str]) -> list[Sniff]:
    """Every Wan/CogVideoX part found in a key set (a combined checkpoint can hold transformer and VAE)."""
    keys = set(keys)
    found: list[Sniff] = []
    for family, part, layout, required, prefixes in _SIGNATURES:
        if any(s.part == part for s in found):
            continue
        for prefix in prefixes:
            if _has(keys, prefix, *required):
                found.append(Sniff(family, part, layout, prefix))
                break
    return found


def _any(keys: set[str], *fragments: str) -> bool:
    return any(f in k for k in keys for f in fragments)


def describe_foreign(keys: Iterable[str]) -> str:
    """A short guess at what a file that is neither Wan nor CogVideoX is, for error messages."""
    keys = set(keys)
    if not keys:
        return "an empty weight file"
    if _any(keys, "lora_A.", "lora_B.", "lora_down.", "lora_up.", ".lora."):
        return "a LoRA file (load it with the LoRA loader, on top of a base model)"
    if _any(keys, "img_emb.proj", "image_embedder.", "k_img.", "add_k_proj."):
        return "a Wan image-to-video (I2V) model, which BLADE does not support (text-to-video only)"
    if _any(keys, "txt_in.individual_token_refiner"):
        return "a HunyuanVideo model"
    if _any(keys, "double_blocks.", "single_blocks.", "single_transformer_blocks."):
        return "a Flux model"
    if _any(keys, "joint_blocks."):
        return "a Stable Diffusion 3 model"
    if _any(keys, "conditioner.embedders.", "label_emb.0."):
        return "a Stable Diffusion XL checkpoint"
    if _any(keys, "input_blocks.0.0.", "cond_stage_model.", "down_blocks.0.attentions.0.transformer_blocks"):
        return "a Stable Diffusion (UNet) checkpoint"
    if _any(keys, "adaln_single.", "caption_projection."):
        return "an LTX-Video or PixArt transformer"
    if _any(keys, "decoder.mid.block_1.", "encoder.down.0.block.0."):
        return "an image VAE (Stable Diffusion / Flux autoencoder) or a CogVideoX VAE in SAT layout"
    if _any(keys, "SelfAttention.q.weight", "shared.weight"):
        return "a T5/UMT5 text encoder (text encoders load from a diffusers folder's text_encoder/)"
    if _any(keys, "text_model.encoder.layers.", "visual.blocks."):
        return "a CLIP model"
    sample = ", ".join(sorted(keys)[:4])
    return f"an unrecognised model (first keys: {sample})"
