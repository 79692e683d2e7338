"""Model families: one adapter module per family (``wan.py``, ``cogvideox.py``) behind one protocol
(:class:`~blade_ops.families.base.ModelFamily`), and the registry that finds the adapter for a name, a model or a
config. Nothing outside this package tests a family's name: it asks the adapter (a test checks this).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import LatentScaling, ModelFamily, check_video_size
from .cogvideox import COGVIDEOX
from .wan import WAN, WAN_NEGATIVE_PROMPT

FamilySpec = ModelFamily  # the name the pack used before the adapters; kept for callers' type hints

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (WAN, COGVIDEOX)}


def family_names() -> list[str]:
    """Registered family names, in registry order (for choices in the nodes and the command line)."""
    return list(FAMILIES)


def get_family(name: str | ModelFamily) -> ModelFamily:
    """Look a family up by name (case, '-' and '_' ignored; "wan2.1" and "CogVideoX-5b" name their family)."""
    if isinstance(name, ModelFamily):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    for family in FAMILIES.values():
        if key.startswith(family.name[:8]):  # "cogvideo" and "cogvideox-5b" both name CogVideoX
            return family
    raise ValueError(f"Unknown model family {name!r}; valid families: {', '.join(FAMILIES)}.")


def family_of_class(class_name: str | None) -> ModelFamily | None:
    """The family whose transformer, VAE, pipeline or text encoder has this diffusers/transformers class name."""
    for family in FAMILIES.values():
        names = family.transformer_classes + family.vae_classes + family.pipeline_classes
        if class_name in names:
            return family
    return None


def family_of_transformer(transformer: Any) -> ModelFamily:
    """The family of a loaded transformer; ValueError naming the supported classes otherwise."""
    for family in FAMILIES.values():
        if family.owns_transformer(transformer):
            return family
    supported = ", ".join(c for f in FAMILIES.values() for c in f.transformer_classes)
    raise ValueError(f"Expected one of {supported}; got {type(transformer).__name__}.")


def family_of_vae_config(config: Mapping[str, Any]) -> ModelFamily:
    """The family of a VAE config (its class name, else its keys); ValueError saying what was expected."""
    for family in FAMILIES.values():
        if family.owns_vae_config(config):
            return family
    raise ValueError(
        "Cannot tell the VAE's family from its config: expected latents_mean/latents_std (Wan) or scaling_factor "
        f"(CogVideoX), found keys {sorted(config)[:12]}. Pass the family name ({', '.join(FAMILIES)})."
    )


def family_of_text_encoder(class_name: str) -> ModelFamily | None:
    """The family whose text encoder class this is (UMT5 for Wan, T5 for CogVideoX)."""
    for family in FAMILIES.values():
        if class_name in family.text_encoder_classes:
            return family
    return None


__all__ = [
    "COGVIDEOX",
    "FAMILIES",
    "FamilySpec",
    "LatentScaling",
    "ModelFamily",
    "WAN",
    "WAN_NEGATIVE_PROMPT",
    "check_video_size",
    "family_names",
    "family_of_class",
    "family_of_text_encoder",
    "family_of_transformer",
    "family_of_vae_config",
    "get_family",
]
