"""Initial noise in each family's latent layout.

The noise is drawn exactly as diffusers draws it (one ``randn_tensor`` call on the whole latent shape with a CPU
generator), so a seed gives the same video here, in diffusers and on any device.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..families import FamilySpec, check_video_size


def latent_grid(family: FamilySpec, *, frames: int, height: int, width: int) -> tuple[int, int, int]:
    """(T, H, W) of the latent video for a checked pixel size, e.g. Wan 81x480x832 -> (21, 60, 104)."""
    check_video_size(family, width=width, height=height, frames=frames)
    s = family.vae_spatial_stride
    return family.latent_frames(frames), height // s, width // s


def latent_shape(family: FamilySpec, batch: int, grid: tuple[int, int, int], channels: int | None = None) -> tuple:
    """The family's layout: Wan [B, C, T, H, W]; CogVideoX [B, T, C, H, W] (frames before channels)."""
    return family.latent_shape(batch, grid, channels)


def prepare_latents(
    family: FamilySpec,
    batch: int,
    grid: tuple[int, int, int],
    generator: torch.Generator | None,
    *,
    channels: int | None = None,
    device: torch.device | str = "cpu",
    init_noise_sigma: float = 1.0,
) -> torch.Tensor:
    """Gaussian noise float32 in the family's layout, drawn on the generator's device, then moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    noise = randn_tensor(latent_shape(family, batch, grid, channels), generator=generator, device=gen_device,
                         dtype=torch.float32)
    return (noise * init_noise_sigma).to(device)
