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
from dataclasses import dataclass
from typing import Any

import torch

from ..families import get_family

VaeConfigLike = Mapping[str, Any] | str  # a VAE config dict, a shipped variant name, or a family name

_CLASS_FAMILY = {"AutoencoderKLWan": "wan", "AutoencoderKLCogVideoX": "cogvideox"}


@dataclass(frozen=True)
class LatentScaling:
    """How one VAE's latents relate to the model's: Wan's channel statistics, or CogVideoX's scaling factor."""

    family: str
    latents_mean: tuple[float, ...] | None = None  # Wan, one per latent channel
    latents_std: tuple[float, ...] | None = None
    scaling_factor: float | None = None  # CogVideoX

    def __post_init__(self):
        if self.family == "wan":
            mean, std = self.latents_mean, self.latents_std
            if not mean or not std or len(mean) != len(std):
                raise ValueError(
                    f"A Wan VAE config needs latents_mean and latents_std of equal length, got {mean!r} and {std!r}."
                )
            if any(s == 0 for s in std):
                raise ValueError(f"latents_std={std!r} contains 0, so the scaling cannot be inverted.")
        elif self.family == "cogvideox":
            if not isinstance(self.scaling_factor, (int, float)) or not self.scaling_factor > 0:
                raise ValueError(
                    f"A CogVideoX VAE config needs a positive scaling_factor, got {self.scaling_factor!r}."
                )
        else:
            raise ValueError(f"Unknown family {self.family!r}; valid families: wan, cogvideox.")

    @property
    def channels(self) -> int | None:
        """Latent channels the statistics are for (Wan), or None where any count works (CogVideoX)."""
        return len(self.latents_mean) if self.latents_mean is not None else None


def _config_family(config: Mapping[str, Any]) -> str:
    name = config.get("_class_name")
    if name in _CLASS_FAMILY:
        return _CLASS_FAMILY[name]
    if config.get("latents_mean") is not None and config.get("latents_std") is not None:
        return "wan"
    if config.get("scaling_factor") is not None:
        return "cogvideox"
    raise ValueError(
        "Cannot tell the VAE's family from its config: expected latents_mean/latents_std (Wan) or scaling_factor "
        f"(CogVideoX), found keys {sorted(config)[:12]}. Pass family='wan' or 'cogvideox'."
    )


def latent_scaling(vae_config: VaeConfigLike, family: str | None = None) -> LatentScaling:
    """The scaling of a VAE config dict (e.g. ``bundle.vae.config``), of a shipped variant's VAE
    ("wan2.1-t2v-1.3b", "cogvideox-2b", ...), or of a family's default variant ("wan", "cogvideox")."""
    from ..models.variants import DEFAULT_VARIANT, VARIANTS, shipped_config

    if isinstance(vae_config, str):
        if vae_config in VARIANTS:
            name = vae_config
        else:
            try:
                name = DEFAULT_VARIANT[get_family(vae_config).name]
            except ValueError:
                raise ValueError(
                    f"{vae_config!r} is neither a shipped variant ({', '.join(VARIANTS)}) nor a family (wan, "
                    "cogvideox); pass a variant name or the VAE's config dict."
                ) from None
        vae_config = shipped_config(name, "vae")
    if not isinstance(vae_config, Mapping):
        raise ValueError(
            f"vae_config must be a config dict or a variant/family name, got {type(vae_config).__name__}."
        )
    fam = get_family(family).name if family is not None else _config_family(vae_config)
    if fam == "wan":
        mean, std = vae_config.get("latents_mean"), vae_config.get("latents_std")
        return LatentScaling(
            "wan", tuple(float(m) for m in mean) if mean else None, tuple(float(s) for s in std) if std else None
        )
    return LatentScaling("cogvideox", scaling_factor=vae_config.get("scaling_factor"))


def _scaling(vae_config: VaeConfigLike | LatentScaling, family: str | None) -> LatentScaling:
    return vae_config if isinstance(vae_config, LatentScaling) else latent_scaling(vae_config, family)


def _stats(scaling: LatentScaling, latents: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    if latents.ndim != 5 or latents.shape[channel_dim] != scaling.channels:
        raise ValueError(
            f"Wan latents must be [B, {scaling.channels}, T, H, W] for this VAE, got shape {tuple(latents.shape)}."
        )
    shape = (1, scaling.channels, 1, 1, 1)
    # float32 first, then the latents' dtype: the constants ComfyUI holds, so every dtype gives its results
    mean = torch.tensor(scaling.latents_mean, dtype=torch.float32).view(shape).to(latents.device, latents.dtype)
    std = torch.tensor(scaling.latents_std, dtype=torch.float32).view(shape).to(latents.device, latents.dtype)
    return mean, std


def _check_cogvideox(latents: torch.Tensor, layout: str) -> None:
    if latents.ndim != 5:
        raise ValueError(f"CogVideoX latents must be {layout}, got shape {tuple(latents.shape)}.")


def to_vae_scale(
    latents: torch.Tensor, vae_config: VaeConfigLike | LatentScaling, family: str | None = None
) -> torch.Tensor:
    """Model-scale latents (Wan [B, C, T, H, W], CogVideoX [B, T, C, H, W]) -> the VAE's scale [B, C, T, H, W].

    Wan: ``x * std + mean`` per channel (ComfyUI's ``Wan21.process_out``). CogVideoX: ``x / scaling_factor``,
    frames and channels swapped. Inverse: :func:`from_vae_scale`.
    """
    scaling = _scaling(vae_config, family)
    if scaling.family == "wan":
        mean, std = _stats(scaling, latents, 1)
        return latents * std + mean
    _check_cogvideox(latents, "[B, T, C, H, W] (the transformer's layout)")
    return latents.permute(0, 2, 1, 3, 4) / scaling.scaling_factor


def from_vae_scale(
    latents: torch.Tensor, vae_config: VaeConfigLike | LatentScaling, family: str | None = None
) -> torch.Tensor:
    """VAE-scale latents [B, C, T, H, W] (e.g. a ComfyUI LATENT's ``samples``) -> the model's scale and layout.

    Wan: ``(x - mean) / std`` per channel (ComfyUI's ``Wan21.process_in``). CogVideoX: ``x * scaling_factor`` as
    [B, T, C, H, W]. Inverse of :func:`to_vae_scale` up to float rounding.
    """
    scaling = _scaling(vae_config, family)
    if scaling.family == "wan":
        mean, std = _stats(scaling, latents, 1)
        return (latents - mean) / std
    _check_cogvideox(latents, "[B, C, T, H, W] (the VAE's layout)")
    return (latents * scaling.scaling_factor).permute(0, 2, 1, 3, 4).contiguous()
