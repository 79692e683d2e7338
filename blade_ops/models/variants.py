"""Shipped model configs, and which one a set of tensors belongs to.

Single-file checkpoints carry weights but no config. For the released variants the config ships with the pack
(``configs/*.json``, values from the public diffusers configs: Wan2.1-T2V-1.3B/14B, CogVideoX-2b/5b). A file
matches a variant when the shape-determined part of its config ("structure": widths, depths, channels) equals
the variant's. Other files (fine-tunes with other widths, the tiny test models) get a config inferred from the
shapes; settings that no tensor reveals (Wan's head count, CogVideoX's rotary flag, VAE norm groups, latent
statistics) come from the family's default variant and can be overridden with ``config=``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class Variant:
    """One released model: its family and the shipped config files of its transformer and VAE."""

    name: str
    family: str
    transformer_config: str
    vae_config: str
    description: str


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "wan2.1-t2v-1.3b",
            "wan",
            "wan2.1-t2v-1.3b_transformer.json",
            "wan2.1_vae.json",
            "Wan2.1 text-to-video 1.3B: dim 1536, 30 blocks, 12 heads x 128",
        ),
        Variant(
            "wan2.1-t2v-14b",
            "wan",
            "wan2.1-t2v-14b_transformer.json",
            "wan2.1_vae.json",
            "Wan2.1 text-to-video 14B: dim 5120, 40 blocks, 40 heads x 128",
        ),
        Variant(
            "cogvideox-2b",
            "cogvideox",
            "cogvideox-2b_transformer.json",
            "cogvideox-2b_vae.json",
            "CogVideoX-2B: 30 layers, 30 heads x 64, sincos positions, VAE scaling 1.15258426",
        ),
        Variant(
            "cogvideox-5b",
            "cogvideox",
            "cogvideox-5b_transformer.json",
            "cogvideox-5b_vae.json",
            "CogVideoX-5B: 42 layers, 48 heads x 64, rotary positions, VAE scaling 0.7",
        ),
    )
}
# The variant whose invisible settings an inferred config starts from (the models BLADE was distilled on).
DEFAULT_VARIANT = {"wan": "wan2.1-t2v-1.3b", "cogvideox": "cogvideox-5b"}
PARTS = ("transformer", "vae")


def available_variants() -> dict[str, str]:
    """Names of the shipped variants with a one-line description each."""
    return {name: v.description for name, v in VARIANTS.items()}


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"Unknown model variant {name!r}; valid variants: {', '.join(VARIANTS)}.")
    return VARIANTS[name]


@cache
def _read_config(filename: str) -> dict:
    return json.loads((CONFIG_DIR / filename).read_text())


def shipped_config(variant: str, part: str) -> dict:
    """A copy of the shipped diffusers config of ``part`` ("transformer" or "vae") of ``variant``."""
    if part not in PARTS:
        raise ValueError(f"Unknown part {part!r}; valid parts: {', '.join(PARTS)}.")
    v = get_variant(variant)
    return dict(_read_config(v.transformer_config if part == "transformer" else v.vae_config))


def _count(shapes: dict, pattern: str) -> int:
    return len({m[1] for k in shapes if (m := re.match(pattern, k))})


def _need(shapes: dict, key: str, what: str) -> tuple[int, ...]:
    if key not in shapes:
        raise KeyError(f"{key} (needed for {what})")
    return shapes[key]


# ---------------------------------------------------------------------------------------------- structures
# A "structure" is the tuple of config values that the tensor shapes determine; equal structures mean the
# weights fit the config. Each family/part has one function from a config and one from diffusers-key shapes.


def structure_from_config(family: str, part: str, cfg: dict) -> dict:
    if family == "wan" and part == "transformer":
        return {
            "inner_dim": cfg["num_attention_heads"] * cfg["attention_head_dim"],
            "num_layers": cfg["num_layers"],
            "ffn_dim": cfg["ffn_dim"],
            "in_channels": cfg["in_channels"],
            "out_channels": cfg.get("out_channels") or cfg["in_channels"],
            "text_dim": cfg["text_dim"],
            "freq_dim": cfg["freq_dim"],
            "patch_size": tuple(cfg["patch_size"]),
        }
    if family == "cogvideox" and part == "transformer":
        return {
            "num_attention_heads": cfg["num_attention_heads"],
            "attention_head_dim": cfg["attention_head_dim"],
            "num_layers": cfg["num_layers"],
            "in_channels": cfg["in_channels"],
            "out_channels": cfg.get("out_channels") or cfg["in_channels"],
            "text_embed_dim": cfg["text_embed_dim"],
            "time_embed_dim": cfg["time_embed_dim"],
            "patch_size": cfg["patch_size"],
        }
    if family == "wan" and part == "vae":
        return {
            "base_dim": cfg["base_dim"],
            "z_dim": cfg["z_dim"],
            "dim_mult": tuple(cfg["dim_mult"]),
            "num_res_blocks": cfg["num_res_blocks"],
            "temperal_downsample": tuple(cfg["temperal_downsample"]),
        }
    if family == "cogvideox" and part == "vae":
        return {
            "block_out_channels": tuple(cfg["block_out_channels"]),
            "layers_per_block": cfg["layers_per_block"],
            "latent_channels": cfg["latent_channels"],
            "in_channels": cfg["in_channels"],
            "out_channels": cfg["out_channels"],
        }
    raise ValueError(f"Unknown family/part {family!r}/{part!r}; valid families: wan, cogvideox; parts: {PARTS}.")


def structure_from_shapes(family: str, part: str, shapes: dict[str, tuple[int, ...]]) -> dict:
    """The structure that diffusers-key tensor shapes imply; KeyError names a missing key."""
    if family == "wan" and part == "transformer":
        inner, cin, *patch = _need(shapes, "patch_embedding.weight", "width and patch size")
        out = _need(shapes, "proj_out.weight", "output channels")[0]
        return {
            "inner_dim": inner,
            "num_layers": _count(shapes, r"blocks\.(\d+)\."),
            "ffn_dim": _need(shapes, "blocks.0.ffn.net.0.proj.weight", "FFN width")[0],
            "in_channels": cin,
            "out_channels": out // (patch[0] * patch[1] * patch[2]),
            "text_dim": _need(shapes, "condition_embedder.text_embedder.linear_1.weight", "text width")[1],
            "freq_dim": _need(shapes, "condition_embedder.time_embedder.linear_1.weight", "time width")[1],
            "patch_size": tuple(patch),
        }
    if family == "cogvideox" and part == "transformer":
        proj = _need(shapes, "patch_embed.proj.weight", "width and patch size")
        if len(proj) != 4:
            raise ValueError("a CogVideoX 1.5 temporal patch embedding (Linear), which BLADE does not support")
        head_dim = _need(shapes, "transformer_blocks.0.attn1.norm_q.weight", "head size")[0]  # per-head LayerNorm
        p = proj[2]
        return {
            "num_attention_heads": proj[0] // head_dim,
            "attention_head_dim": head_dim,
            "num_layers": _count(shapes, r"transformer_blocks\.(\d+)\."),
            "in_channels": proj[1],
            "out_channels": _need(shapes, "proj_out.weight", "output channels")[0] // (p * p),
            "text_embed_dim": _need(shapes, "patch_embed.text_proj.weight", "text width")[1],
            "time_embed_dim": _need(shapes, "time_embedding.linear_1.weight", "time width")[0],
            "patch_size": p,
        }
    if family == "wan" and part == "vae":
        base = _need(shapes, "encoder.conv_in.weight", "base width")[0]
        stages = _count(shapes, r"decoder\.up_blocks\.(\d+)\.")
        nrb = _count(shapes, r"decoder\.up_blocks\.0\.resnets\.(\d+)\.") - 1
        dim_mult, temporal = [], []
        for s in range(stages):
            first = s * (nrb + 1)  # encoder.down_blocks is flat: nrb resnets then one resample per stage
            dim_mult.append(_need(shapes, f"encoder.down_blocks.{first}.conv1.weight", "stage widths")[0] // base)
            if s < stages - 1:
                temporal.append(f"encoder.down_blocks.{first + nrb}.time_conv.weight" in shapes)
        return {
            "base_dim": base,
            "z_dim": _need(shapes, "post_quant_conv.weight", "latent channels")[0],
            "dim_mult": tuple(dim_mult),
            "num_res_blocks": nrb,
            "temperal_downsample": tuple(temporal),
        }
    if family == "cogvideox" and part == "vae":
        stages = _count(shapes, r"encoder\.down_blocks\.(\d+)\.")
        return {
            "block_out_channels": tuple(
                _need(shapes, f"encoder.down_blocks.{i}.resnets.0.conv2.conv.weight", "stage widths")[0]
                for i in range(stages)
            ),
            "layers_per_block": _count(shapes, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."),
            "latent_channels": _need(shapes, "encoder.conv_out.conv.weight", "latent channels")[0] // 2,
            "in_channels": _need(shapes, "encoder.conv_in.conv.weight", "input channels")[1],
            "out_channels": _need(shapes, "decoder.conv_out.conv.weight", "output channels")[0],
        }
    raise ValueError(f"Unknown family/part {family!r}/{part!r}; valid families: wan, cogvideox; parts: {PARTS}.")


def match_variant(family: str, part: str, structure: dict) -> list[str]:
    """Shipped variants of ``family`` whose ``part`` config has this structure (VAEs can match several)."""
    return [
        name
        for name, v in VARIANTS.items()
        if v.family == family and structure_from_config(family, part, shipped_config(name, part)) == structure
    ]


def config_from_structure(
    family: str, part: str, structure: dict, overrides: dict | None = None, base_variant: str | None = None
) -> dict:
    """A full config for weights of no shipped variant: ``base_variant`` (default: the family's default variant),
    the structure's values put in, then ``overrides`` (settings no tensor reveals, e.g. Wan's head count)."""
    overrides = dict(overrides or {})
    cfg = shipped_config(base_variant or DEFAULT_VARIANT[family], part)
    s = dict(structure)
    if family == "wan" and part == "transformer":
        inner = s.pop("inner_dim")
        head_dim = overrides.get("attention_head_dim", cfg["attention_head_dim"])
        if "num_attention_heads" not in overrides:
            if inner % head_dim:
                raise ValueError(
                    f"width {inner} is not a multiple of the head size {head_dim}, so the head count cannot be "
                    f"inferred; pass config={{'num_attention_heads': H, 'attention_head_dim': D}} with H*D = {inner}"
                )
            s["num_attention_heads"] = inner // head_dim
    for k, v in s.items():
        cfg[k] = list(v) if isinstance(v, tuple) else v
    cfg.update(overrides)
    return cfg
