"""Dense and sparse text-to-video without diffusers pipeline classes: encode -> noise -> denoise -> decode."""

from .decode import decode, unscale_latents
from .denoise import Guidance, NonFiniteLatentsError, StepCallback, denoise
from .latents import latent_grid, latent_shape, prepare_latents
from .presets import PRESETS, Preset, get_preset, prepare_model, preset_request
from .request import DEFAULT_SIZES, GenerationCancelled, GenerationRequest, GenerationResult, StepInfo
from .run import generate
from .sample import sample_latents
from .scaling import LatentScaling, from_vae_scale, latent_scaling, to_vae_scale

__all__ = [
    "DEFAULT_SIZES",
    "GenerationCancelled",
    "GenerationRequest",
    "GenerationResult",
    "LatentScaling",
    "Guidance",
    "NonFiniteLatentsError",
    "PRESETS",
    "Preset",
    "StepCallback",
    "StepInfo",
    "decode",
    "denoise",
    "from_vae_scale",
    "generate",
    "get_preset",
    "latent_grid",
    "latent_scaling",
    "latent_shape",
    "prepare_latents",
    "prepare_model",
    "preset_request",
    "sample_latents",
    "to_vae_scale",
    "unscale_latents",
]
