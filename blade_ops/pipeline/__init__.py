"""Dense and sparse text-to-video without diffusers pipeline classes: encode -> noise -> denoise -> decode."""

from .decode import decode, unscale_latents
from .denoise import Guidance, StepCallback, denoise
from .latents import cogvideox_rotary, latent_grid, latent_shape, prepare_latents
from .presets import PRESETS, Preset, get_preset, prepare_model, preset_request
from .request import DEFAULT_SIZES, GenerationCancelled, GenerationRequest, GenerationResult, StepInfo
from .run import generate
from .sample import sample_latents

__all__ = [
    "DEFAULT_SIZES",
    "GenerationCancelled",
    "GenerationRequest",
    "GenerationResult",
    "Guidance",
    "PRESETS",
    "Preset",
    "StepCallback",
    "StepInfo",
    "cogvideox_rotary",
    "decode",
    "denoise",
    "generate",
    "get_preset",
    "latent_grid",
    "latent_shape",
    "prepare_latents",
    "prepare_model",
    "preset_request",
    "sample_latents",
    "unscale_latents",
]
