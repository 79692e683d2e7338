"""Shipped model configs, and which one a set of tensors belongs to.

Single-file checkpoints carry weights but no config. For the released variants (each family adapter lists its own)
the config ships with the pack (``configs/*.json``, values from the public diffusers configs). A file
matches a variant when the shape-determined part of its config ("structure": widths, depths, channels) equals
the variant's. Other files (fine-tunes with other widths, the tiny test models) get a config inferred from the
shapes; settings that no tensor reveals (Wan's head count, CogVideoX's rotary flag, VAE norm groups, latent
statistics) come from the family's default variant and can be overridden with ``config=``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..families import FAMILIES, get_family

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


# Each family adapter lists its released models (blade_ops/families); their configs ship in configs/.
VARIANTS: dict[str, Variant] = {
    v.name: Variant(v.name, family.name, v.transformer_config, v.vae_config, v.description)
    for family in FAMILIES.values()
    for v in family.variants
}
# The variant whose invisible settings an inferred config starts from (the models BLADE was distilled on).
DEFAULT_VARIANT = {name: family.default_variant for name, family in FAMILIES.items()}
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


def random_model(variant: str, part: str, **overrides):
    """The diffusers model of ``part`` of ``variant`` built from its shipped config (``overrides`` on top) with the
    class's random initialisation, on torch's current default device: full-size models for benchmarks, whose
    timings do not depend on the weights."""
    import diffusers

    cfg = shipped_config(variant, part)
    cls = getattr(diffusers, cfg.pop("_class_name"))
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return cls.from_config({**cfg, **overrides})


# ---------------------------------------------------------------------------------------------- structures
# A "structure" is the tuple of config values that the tensor shapes determine; equal structures mean the
# weights fit the config. Each family adapter computes it from a config and from diffusers-key shapes.


def _check_part(family: str, part: str):
    if part not in PARTS:
        raise ValueError(f"Unknown part {part!r}; valid parts: {', '.join(PARTS)}.")
    return get_family(family)


def structure_from_config(family: str, part: str, cfg: dict) -> dict:
    return _check_part(family, part).structure_from_config(part, cfg)


def structure_from_shapes(family: str, part: str, shapes: dict[str, tuple[int, ...]]) -> dict:
    """The structure that diffusers-key tensor shapes imply; KeyError names a missing key."""
    return _check_part(family, part).structure_from_shapes(part, shapes)


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
    fam = _check_part(family, part)
    cfg = shipped_config(base_variant or fam.default_variant, part)
    s = fam.config_overrides_from_structure(part, structure, cfg, overrides)
    for k, v in s.items():
        cfg[k] = list(v) if isinstance(v, tuple) else v
    cfg.update(overrides)
    return cfg
