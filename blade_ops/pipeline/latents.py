"""Initial noise in each family's latent layout, and CogVideoX's rotary position tables.

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
    """Wan [B, C, T, H, W]; CogVideoX [B, T, C, H, W] (its transformer and VAE keep frames before channels)."""
    c = channels or family.latent_channels
    t, h, w = grid
    return (batch, c, t, h, w) if family.name == "wan" else (batch, t, c, h, w)


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


def _crop_region(grid_hw: tuple[int, int], base_w: int, base_h: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Centre region of the base grid with the aspect ratio of ``grid_hw`` (CogVideoX 1.0 rotary positions)."""
    h, w = grid_hw
    if h / w > base_h / base_w:
        rh, rw = base_h, int(round(base_h / h * w))
    else:
        rw, rh = base_w, int(round(base_w / w * h))
    top, left = int(round((base_h - rh) / 2.0)), int(round((base_w - rw) / 2.0))
    return (top, left), (top + rh, left + rw)


def cogvideox_rotary(transformer: torch.nn.Module, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(cos, sin) [T*H*W/p^2, head_dim] for latents [B, T, C, H, W], or None for learned positions."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    cfg = transformer.config
    if not cfg.use_rotary_positional_embeddings:
        return None
    p, p_t = cfg.patch_size, cfg.patch_size_t
    t, gh, gw = latents.shape[1], latents.shape[3] // p, latents.shape[4] // p
    base_w, base_h = cfg.sample_width // p, cfg.sample_height // p
    if p_t is None:  # CogVideoX 1.0: positions of a centre crop of the training grid
        cos, sin = get_3d_rotary_pos_embed(
            embed_dim=cfg.attention_head_dim, crops_coords=_crop_region((gh, gw), base_w, base_h),
            grid_size=(gh, gw), temporal_size=t, device=latents.device,
        )
    else:  # CogVideoX 1.5: sliced positions over the largest training grid
        cos, sin = get_3d_rotary_pos_embed(
            embed_dim=cfg.attention_head_dim, crops_coords=None, grid_size=(gh, gw),
            temporal_size=(t + p_t - 1) // p_t, grid_type="slice", max_size=(base_h, base_w), device=latents.device,
        )
    return cos, sin
