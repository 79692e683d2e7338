"""The toy domain's VAE: :class:`blade_ops.models.pixel_vae.PixelVAE` (kept there so toy folders load everywhere)."""

from blade_ops.models.pixel_vae import PixelVAE

__all__ = ["PixelVAE"]
