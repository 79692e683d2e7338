"""A fixed, exact "pixel" VAE with Wan's VAE interface and geometry, for the toy domain (training/toy).

It lives in blade_ops so that a saved toy model folder (``vae/config.json`` with ``_class_name: PixelVAE``) loads
through the same loader, pipeline and nodes as a real Wan model.

Encode: average every 8x8 pixel cell and every group of 4 frames (the first frame alone, as Wan's causal VAE
does), then map the 3 colours to 16 latent channels with a fixed matrix with orthonormal columns. Decode: the
transpose matrix, then nearest upsampling back to 4k+1 frames and 8x pixels. Toy clips are constant over each
cell and frame group, so the round trip is exact. It is a diffusers ``ModelMixin``/``ConfigMixin`` with
``z_dim``, ``latents_mean``, ``latents_std`` and ``decode(z, return_dict=False)``, so blade_ops' pipeline decodes
through it exactly as through ``AutoencoderKLWan`` (latents normalised per channel with mean/std).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class PixelVAE(ModelMixin, ConfigMixin):
    """Linear, exact-on-toy-data VAE: [B, 3, 4k+1, 8h, 8w] <-> [B, z_dim, k+1, h, w]."""

    @register_to_config
    def __init__(
        self,
        z_dim: int = 16,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
        temperal_downsample: list[bool] | None = None,  # Wan's config key (sic); scale 4 in time
        seed: int = 0,
    ):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(z_dim, 3, generator=gen, dtype=torch.float64))
        self.proj = nn.Parameter(q.float(), requires_grad=False)  # [z_dim, 3], orthonormal columns
        self.register_to_config(
            latents_mean=list(latents_mean or [0.0] * z_dim),
            latents_std=list(latents_std or [1.0] * z_dim),
            temperal_downsample=list(temperal_downsample or [False, True, True]),
        )

    @property
    def spatial_compression_ratio(self) -> int:
        return 8

    @property
    def temporal_compression_ratio(self) -> int:
        return 4

    def encode_cells(self, cells: torch.Tensor) -> torch.Tensor:
        """Colours already at latent resolution [B, 3, T, h, w] -> raw latents [B, z_dim, T, h, w]."""
        return torch.einsum("zc,bcthw->bzthw", self.proj.to(cells.dtype), cells)

    def encode_pixels(self, video: torch.Tensor) -> torch.Tensor:
        """Video [B, 3, 4k+1, 8h, 8w] in [-1, 1] -> raw latents [B, z_dim, k+1, h, w]."""
        first, rest = video[:, :, :1], video[:, :, 1:]
        b, c, f, hh, ww = rest.shape
        rest = rest.reshape(b, c, f // 4, 4, hh, ww).mean(3)
        cells = torch.nn.functional.avg_pool3d(torch.cat([first, rest], 2), (1, 8, 8))
        return self.encode_cells(cells)

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> what the transformer sees: (z - mean) / std per channel (Wan's convention)."""
        mean = torch.tensor(self.config.latents_mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.config.latents_std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
        return (z - mean) / std

    def decode_cells(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents [B, z_dim, T, h, w] -> colours at latent resolution [B, 3, T, h, w]."""
        return torch.einsum("zc,bzthw->bcthw", self.proj.to(z.dtype), z)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        """Raw latents -> video [B, 3, 4(T-1)+1, 8h, 8w] (clamped to [-1, 1])."""
        cells = self.decode_cells(z).clamp(-1, 1)
        first, rest = cells[:, :, :1], cells[:, :, 1:].repeat_interleave(4, dim=2)
        video = torch.cat([first, rest], 2).repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)
        if not return_dict:
            return (video,)
        from diffusers.models.autoencoders.vae import DecoderOutput

        return DecoderOutput(sample=video)
