"""Model loading for Wan2.1-T2V (1.3B, 14B), Wan2.2 (TI2V-5B, T2V-A14B) and CogVideoX (2B, 5B): diffusers folders
or single safetensors files.

Public API::

    load_model_bundle(path, *, family=None, parts=("transformer", "vae", "text_encoder", "tokenizer"),
                      vae_path=None, text_encoder_path=None, config=None, dtype=torch.bfloat16, device="cpu",
                      offload="none", expert_paths=None) -> ModelBundle
    load_transformer(path, *, family=None, config=None, variant=None, dtype=torch.bfloat16, device="cpu")
    load_vae(path, *, family=None, config=None, variant=None, dtype=torch.bfloat16, device="cpu")
    load_text_encoder(path, *, dtype=torch.bfloat16, device="cpu") -> (encoder, tokenizer)
    detect_family(path) -> a family name;  detect_variant(path) -> str | None
    available_variants() -> {name: description}
    place(module, device), on_device(module, device, offload="model")   # see placement.py

Only safetensors are read; nothing is downloaded (shipped configs live in ``configs/``).
"""

from .bundle import ModelBundle
from .loading import (
    DEFAULT_PARTS,
    detect_family,
    detect_variant,
    load_model_bundle,
    load_text_encoder,
    load_transformer,
    load_vae,
    resolve_dtype,
)
from .placement import OFFLOAD_POLICIES, on_device, place
from .variants import available_variants, shipped_config

__all__ = [
    "DEFAULT_PARTS",
    "OFFLOAD_POLICIES",
    "ModelBundle",
    "available_variants",
    "detect_family",
    "detect_variant",
    "load_model_bundle",
    "load_text_encoder",
    "load_transformer",
    "load_vae",
    "on_device",
    "place",
    "resolve_dtype",
    "shipped_config",
]
