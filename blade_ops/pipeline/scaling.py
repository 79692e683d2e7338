"""Latents in the model's scale <-> latents in the VAE's own scale, for each family.

The transformer works on normalised latents; the VAE encodes to and decodes from its own scale, which is also what a
ComfyUI LATENT holds (``samples`` after ``LatentFormat.process_out``):

- Wan2.1: per channel, ``vae = model * latents_std + latents_mean`` (the VAE config's statistics; ComfyUI's
  ``Wan21`` latent format uses the same numbers with ``scale_factor`` 1). Layout [B, C, T, H, W] on both sides.
- CogVideoX: ``vae = model / scaling_factor`` (1.15258426 for 2B, 0.7 for 5B), and the layout changes from the
  transformer's [B, T, C, H, W] to the VAE's [B, C, T, H, W].

The arithmetic runs in the latents' dtype in the same order as ComfyUI's ``process_out`` / ``process_in``, so the
results equal what ComfyUI computes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..families import LatentScaling, family_of_vae_config, get_family

__all__ = ["LatentScaling", "from_vae_scale", "latent_scaling", "to_vae_scale"]

VaeConfigLike = Mapping[str, Any] | str  # a VAE config dict, a shipped variant name, or a family name


def latent_scaling(vae_config: VaeConfigLike, family: str | None = None) -> LatentScaling:
    """The scaling of a VAE config dict (e.g. ``bundle.vae.config``), of a shipped variant's VAE
    ("wan2.1-t2v-1.3b", "cogvideox-2b", ...), or of a family's default variant (a family name)."""
    from ..families import FAMILIES
    from ..models.variants import VARIANTS, shipped_config

    if isinstance(vae_config, str):
        if vae_config in VARIANTS:
            name = vae_config
        else:
            try:
                name = get_family(vae_config).default_variant
            except ValueError:
                raise ValueError(
                    f"{vae_config!r} is neither a shipped variant ({', '.join(VARIANTS)}) nor a family "
                    f"({', '.join(FAMILIES)}); pass a variant name or the VAE's config dict."
                ) from None
        vae_config = shipped_config(name, "vae")
    if not isinstance(vae_config, Mapping):
        raise ValueError(
            f"vae_config must be a config dict or a variant/family name, got {type(vae_config).__name__}."
        )
    fam = get_family(family) if family is not None else family_of_vae_config(vae_config)
    return fam.latent_scaling(vae_config)


def _scaling(vae_config: VaeConfigLike | LatentScaling, family: str | None) -> LatentScaling:
    return vae_config if isinstance(vae_config, LatentScaling) else latent_scaling(vae_config, family)


def to_vae_scale(
    latents: torch.Tensor, vae_config: VaeConfigLike | LatentScaling, family: str | None = None
) -> torch.Tensor:
    """Model-scale latents (the family's layout) -> the VAE's scale [B, C, T, H, W].

    Wan: ``x * std + mean`` per channel (ComfyUI's ``Wan21.process_out``). CogVideoX: ``x / scaling_factor``,
    frames and channels swapped. Inverse: :func:`from_vae_scale`.
    """
    scaling = _scaling(vae_config, family)
    return get_family(scaling.family).to_vae_scale(latents, scaling)


def from_vae_scale(
    latents: torch.Tensor, vae_config: VaeConfigLike | LatentScaling, family: str | None = None
) -> torch.Tensor:
    """VAE-scale latents [B, C, T, H, W] (e.g. a ComfyUI LATENT's ``samples``) -> the model's scale and layout.

    Wan: ``(x - mean) / std`` per channel (ComfyUI's ``Wan21.process_in``). CogVideoX: ``x * scaling_factor`` as
    [B, T, C, H, W]. Inverse of :func:`to_vae_scale` up to float rounding.
    """
    scaling = _scaling(vae_config, family)
    return get_family(scaling.family).from_vae_scale(latents, scaling)
