"""Model families: one adapter module per family (``wan.py``, ``wan22.py``, ``cogvideox.py``) behind one protocol
(:class:`~blade_ops.families.base.ModelFamily`), and the registry that finds the adapter for a name, a model or a
config. Nothing outside this package tests a family's name: it asks the adapter (a test checks this).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import LatentScaling, ModelFamily, ShippedVariant, check_video_size
from .cogvideox import COGVIDEOX
from .wan import WAN, WAN_NEGATIVE_PROMPT
from .wan22 import WAN22_A14B, WAN22_TI2V

FamilySpec = ModelFamily  # the name the pack used before the adapters; kept for callers' type hints

# Registry order: an architecture's first family comes before the others of that architecture.
FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (WAN, COGVIDEOX, WAN22_TI2V, WAN22_A14B)}
# The order in which families are tried when a model is recognised: a family whose models are a special case of
# another family's (more latent channels, a pipeline folder with more entries) comes before it.
DETECTION_ORDER: tuple[ModelFamily, ...] = (WAN22_TI2V, WAN22_A14B, WAN, COGVIDEOX)


def family_names() -> list[str]:
    """Registered family names, in registry order (for choices in the nodes and the command line)."""
    return list(FAMILIES)


def _key(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "")


def get_family(name: str | ModelFamily) -> ModelFamily:
    """Look a family up by name (case, '-' and '_' ignored). A longer name whose start names a family names it
    ("wan2.1" and "CogVideoX-5b" name their families); where several do, the longest match wins."""
    if isinstance(name, ModelFamily):
        return name
    key = _key(name)
    exact = [f for f in FAMILIES.values() if _key(f.name) == key]
    if exact:
        return exact[0]
    # the first 8 characters: "cogvideo" and "cogvideox-5b" both name CogVideoX
    starts = [f for f in FAMILIES.values() if key.startswith(_key(f.name)[:8])]
    if starts:
        return max(starts, key=lambda f: len(_key(f.name)[:8]))
    raise ValueError(f"Unknown model family {name!r}; valid families: {', '.join(FAMILIES)}.")


def family_of_class(class_name: str | None) -> ModelFamily | None:
    """The first family whose transformer, VAE, pipeline or text encoder has this diffusers/transformers class."""
    for family in FAMILIES.values():
        names = family.transformer_classes + family.vae_classes + family.pipeline_classes
        if class_name in names:
            return family
    return None


def same_architecture(family: str | ModelFamily) -> list[ModelFamily]:
    """The families sharing ``family``'s architecture, in detection order."""
    arch = get_family(family).arch
    return [f for f in DETECTION_ORDER if f.arch == arch]


def family_of_pipeline(index: Mapping[str, Any]) -> ModelFamily | None:
    """The family a diffusers pipeline folder's model_index.json describes, or None."""
    for family in DETECTION_ORDER:
        if family.owns_pipeline_index(index):
            return family
    return None


def candidate_families(
    found: str | ModelFamily, requested: str | ModelFamily | None = None, experts: int | None = None
) -> list[ModelFamily]:
    """The families of ``found``'s architecture to ask (in detection order) whether they accept a model part.

    ``requested``: the family the caller named (only it, when it shares the architecture). ``experts``: the number
    of transformers the caller holds (the families with that many, also those never picked automatically). Else
    the families that may be detected automatically.
    """
    candidates = same_architecture(found)
    if requested is not None:
        return [f for f in candidates if f is get_family(requested)]
    if experts is not None and experts > 1:
        return [f for f in candidates if len(f.expert_names) == experts]
    return [f for f in candidates if f.auto_detect]


def family_of_transformer(transformer: Any) -> ModelFamily:
    """The family of a loaded transformer; ValueError naming the supported classes otherwise."""
    for family in DETECTION_ORDER:
        if family.auto_detect and family.owns_transformer(transformer):
            return family
    supported = ", ".join(c for f in FAMILIES.values() for c in f.transformer_classes)
    raise ValueError(f"Expected one of {supported}; got {type(transformer).__name__}.")


def family_of_vae_config(config: Mapping[str, Any]) -> ModelFamily:
    """The family of a VAE config (its class name, else its keys); ValueError saying what was expected."""
    for family in DETECTION_ORDER:
        if family.auto_detect and family.owns_vae_config(config):
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
    "DETECTION_ORDER",
    "ModelFamily",
    "ShippedVariant",
    "WAN",
    "WAN22_A14B",
    "WAN22_TI2V",
    "WAN_NEGATIVE_PROMPT",
    "candidate_families",
    "check_video_size",
    "family_names",
    "family_of_class",
    "family_of_pipeline",
    "family_of_text_encoder",
    "family_of_transformer",
    "family_of_vae_config",
    "get_family",
    "same_architecture",
]
