"""Embeddings -> final latents: seeded noise in the family's layout, then every step of a sampler.

The one place where noise is drawn and denoised, shared by :func:`~blade_ops.pipeline.run.generate` and the
BLADE Sampler node, so a seed gives the same latents from Python, the command line and ComfyUI.
"""

from __future__ import annotations

import contextlib

import torch

from ..models.bundle import ModelBundle
from ..models.placement import on_device
from ..sampling import Sampler, make_sampler
from ..text import PromptEmbeds
from ..validation import check_seed
from .denoise import Guidance, StepCallback, denoise
from .latents import latent_grid, prepare_latents
from .presets import warn_off_schedule_loras


def _grid(bundle: ModelBundle, size: dict[str, int] | None, grid: tuple[int, int, int] | None) -> tuple[int, int, int]:
    if (size is None) == (grid is None):
        raise ValueError("Give exactly one of size={'width', 'height', 'frames'} (pixels) or grid=(T, H, W) (latent).")
    if grid is not None:
        if len(grid) != 3 or not all(isinstance(g, int) and g > 0 for g in grid):
            raise ValueError(f"grid={grid!r} must be three positive integers (T, H, W) of the latent video.")
        return tuple(grid)
    return latent_grid(bundle.family, **size)


@torch.no_grad()
def sample_latents(
    bundle: ModelBundle,
    embeds: PromptEmbeds,
    *,
    size: dict[str, int] | None = None,
    grid: tuple[int, int, int] | None = None,
    sampler: Sampler | str = "blade",
    steps: int | None = None,
    guidance: Guidance | float = 1.0,
    seed: int = 0,
    callback: StepCallback | None = None,
    device: torch.device | str | None = None,
    offload: str = "none",
) -> torch.Tensor:
    """Final latents float32 on the CPU, one video per prompt in ``embeds`` (B = ``embeds.cond.shape[0]``).

    Shape: Wan [B, C, T, H, W], CogVideoX [B, T, C, H, W], with (T, H, W) from ``grid`` or from a pixel ``size``
    (width, height, frames; checked against the family's rules). ``sampler`` is a built Sampler or a registered
    name (built from the bundle's scheduler config with ``steps``). The seed drives one CPU generator for the
    noise and for stochastic samplers, so results repeat across devices.

    ``device``: move the transformer there for the run (``offload="model"`` moves it back afterwards); None runs it
    where it already is. ``callback`` gets a StepInfo per step; returning False raises GenerationCancelled.
    """
    bundle.require("transformer")
    family = bundle.family
    latent_grid_ = _grid(bundle, size, grid)
    if isinstance(sampler, str):
        sampler = make_sampler(sampler, family, bundle.scheduler_config, steps=steps)
    if not isinstance(guidance, Guidance):
        guidance = Guidance(float(guidance))
    for expert in bundle.experts:
        warn_off_schedule_loras(expert, len(sampler.timesteps), guidance.scale if guidance.enabled else 1.0)
    generator = torch.Generator("cpu").manual_seed(check_seed(seed))
    channels = family.latent_channels_of(bundle.transformer)
    noise = prepare_latents(
        family, embeds.cond.shape[0], latent_grid_, generator, channels=channels,
        init_noise_sigma=sampler.init_noise_sigma,
    )
    with contextlib.ExitStack() as stack:
        if device is not None:  # every expert: a run visits them all (offload="model" moves them back after)
            for expert in bundle.experts:
                stack.enter_context(on_device(expert, device, offload=offload))
        latents = denoise(bundle, embeds, noise, sampler, guidance, callback, generator)
    return latents.cpu()
