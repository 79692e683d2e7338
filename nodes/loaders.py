"""Loader nodes: the transformer, the VAE and the text encoder, from ComfyUI's model folders.

Each accepts a single safetensors file from the matching folder (diffusion_models, vae, text_encoders) or a
diffusers-format folder from models/diffusers. Reading, family detection and the error messages for files of the
wrong kind are blade_ops' job; these nodes only resolve names to paths and pick dtypes, and put blade_ops' advice
(written for Python callers: "pass family=", "load_vae()", "config={...}") in the nodes' own terms.

Cancel (ComfyUI's interrupt) is checked between the files of a load and between groups of tensors of a large file;
a cancelled load raises and returns nothing, so no half-built model is kept or cached.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..blade_ops.families import family_names
from . import comfy_bridge as bridge
from .types import BLADE_MODEL, BLADE_TEXT_ENCODER, BLADE_VAE, CATEGORY, BladeModel

log = logging.getLogger(__name__)

FAMILY_CHOICES = ["auto", *family_names()]
DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
}
DTYPE_CHOICES = list(DTYPES)

FAMILY_TOOLTIP = "Model family. 'auto' reads it from the file's tensor names; set it when auto-detection is wrong."
DTYPE_TOOLTIP = "Weight dtype: bf16 (what the released models use), fp16, or fp32 (twice the memory, for checks)."


DIFFUSERS_FOLDER_ADVICE = "load it from a diffusers folder in models/diffusers (its config.json says them)"
# blade_ops' hints that name Python arguments or functions, and what a loader node's user does instead.
_NODE_TERMS = (
    (re.compile(r"load it with load_transformer\(\) instead"), "load it with BLADE Model Loader instead"),
    (re.compile(r"load it with load_vae\(\) instead"), "load it with BLADE VAE Loader instead"),
    (re.compile(r"pass family=('\w+')"), r"set family to \1 or auto"),
    (re.compile(r"pass family= \(([^)]*)\)"), r"set family (\1)"),
    (re.compile(r"pass config=\{.*$", re.S), DIFFUSERS_FOLDER_ADVICE + "."),
    (re.compile(r"needs config=\{\.\.\.\}\.$"), "needs its own settings: " + DIFFUSERS_FOLDER_ADVICE + "."),
    (re.compile(r"Pass expert_paths=\{'(\w+)': \.\.\.\} with the ([\w-]+) expert's file"),
     r"Load both experts' files with BLADE Model Loader (two experts) (\1: the \2 expert)"),
)


def node_terms(message: str) -> str:
    """A blade_ops loading message with its Python-API advice put in terms of the loader nodes' inputs."""
    for pattern, replacement in _NODE_TERMS:
        message = pattern.sub(replacement, message)
    return message


@contextmanager
def _in_node_terms() -> Iterator[None]:
    try:
        yield
    except (ValueError, FileNotFoundError) as err:
        if len(err.args) == 1 and isinstance(err.args[0], str):
            err.args = (node_terms(err.args[0]),)
        raise


def _torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a ``dtype`` choice; ValueError naming the valid ones."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {DTYPE_CHOICES}.")
    return DTYPES[dtype]


def _load(path, parts: tuple[str, ...], family: str, dtype: str, expert_paths: dict | None = None):
    """A ModelBundle holding ``parts`` read from ``path``, on the CPU until a node needs it on the GPU."""
    from ..blade_ops.models import load_model_bundle

    with _in_node_terms():
        return load_model_bundle(
            path, family=None if family == "auto" else family, parts=parts, dtype=_torch_dtype(dtype), device="cpu",
            check_cancel=bridge.check_interrupted, expert_paths=expert_paths,
        )


def _load_text_encoder_file(path, family: str, dtype: str):
    """A bundle with the encoder and tokenizer of one ComfyUI text encoder file; the file's kind sets the family."""
    from ..blade_ops.families import get_family
    from ..blade_ops.models import ModelBundle
    from ..blade_ops.models.text_encoder_file import load_text_encoder_file

    torch_dtype = _torch_dtype(dtype)
    bridge.check_interrupted()
    with _in_node_terms():
        encoder, tokenizer, found = load_text_encoder_file(path, dtype=torch_dtype, device="cpu")
    found_class = get_family(found).text_encoder_classes[0]
    if family != "auto" and found_class not in get_family(family).text_encoder_classes:
        kinds = {"UMT5EncoderModel": "UMT5 (e.g. umt5_xxl_fp16.safetensors)",
                 "T5EncoderModel": "T5 v1.1 XXL (e.g. t5xxl_fp16)"}
        found_kind = kinds[found_class]
        wanted_kind = kinds[get_family(family).text_encoder_classes[0]]
        raise ValueError(f"{path.name} is a {found_kind} encoder, which is {found}'s; {family} needs "
                         f"{wanted_kind}. Pick another file or set family to auto.")
    owner = get_family(found if family == "auto" else family)
    return ModelBundle(owner, text_encoder=encoder, tokenizer=tokenizer, dtype=torch_dtype,
                       sources={"text_encoder": str(path), "tokenizer": str(path)})


class BladeModelLoader:
    """Load a Wan2.1, Wan2.2 or CogVideoX transformer (a two-expert model from its diffusers folder)."""

    DESCRIPTION = (
        "Loads a Wan2.1, Wan2.2 or CogVideoX text-to-video transformer from models/diffusion_models (single "
        ".safetensors, e.g. wan2.1_t2v_1.3B_bf16.safetensors, wan2.2_ti2v_5B_fp16.safetensors; fp8_scaled files are "
        "dequantised) or a diffusers folder in models/diffusers (a Wan2.2 A14B folder gives both experts). Chain "
        "BLADE ASA and BLADE LoRA after it, then BLADE Sampler. For Wan2.2 A14B's two single files use BLADE Model "
        "Loader (two experts)."
    )
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (BLADE_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The transformer, with its family and sampler settings.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model_name": (
                    bridge.model_choices("diffusion_models", diffusers=True),
                    {"tooltip": "Transformer file in models/diffusion_models, or a diffusers folder in "
                     "models/diffusers."},
                ),
                "family": (FAMILY_CHOICES, {"default": "auto", "tooltip": FAMILY_TOOLTIP}),
                "dtype": (DTYPE_CHOICES, {"default": "bf16", "tooltip": DTYPE_TOOLTIP}),
            }
        }

    def load(self, model_name: str, family: str = "auto", dtype: str = "bf16") -> tuple[BladeModel]:
        path = bridge.resolve_model_path(model_name, "diffusion_models", diffusers=True)
        bundle = _load(path, ("transformer",), family, dtype)
        log.info("BLADE: loaded %s transformer from %s", bundle.family.name, path)
        return (BladeModel(bundle),)


def _expert_families() -> list[str]:
    """Families that run more than one transformer (experts)."""
    from ..blade_ops.families import FAMILIES

    return [name for name, f in FAMILIES.items() if len(f.expert_names) > 1]


def _experts_tooltip() -> str:
    from ..blade_ops.families import FAMILIES

    described = [
        f"{f.label}: " + ", ".join(f"{n} = {label} expert" for n, label in zip(f.expert_names, f.expert_labels,
                                                                                 strict=True))
        for f in FAMILIES.values() if len(f.expert_names) > 1
    ]
    return "; ".join(described) or "no registered family has two experts"


class BladeExpertsModelLoader:
    """Load a model that runs two transformers (experts) from two single files."""

    DESCRIPTION = (
        "Loads a two-expert text-to-video model (Wan2.2 T2V-A14B) from two files in models/diffusion_models, e.g. "
        "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors (first) and wan2.2_t2v_low_noise_14B_fp8_scaled"
        ".safetensors (second); fp8_scaled files are dequantised. The sampler runs the first for high-noise steps "
        "and the second below the model's boundary. Chain BLADE ASA (both experts) and BLADE LoRA Loader (expert) "
        "after it, then BLADE Sampler."
    )
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (BLADE_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("Both transformers, with the family and sampler settings.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        experts = _expert_families()
        family = {"tooltip": "Model family (only families with two experts). " + _experts_tooltip()}
        if experts:
            family["default"] = experts[0]
        return {
            "required": {
                "model_name": (bridge.model_choices("diffusion_models"),
                               {"tooltip": "The first expert's file (Wan2.2 A14B: the high-noise model)."}),
                "model_name_2": (bridge.model_choices("diffusion_models"),
                                 {"tooltip": "The second expert's file (Wan2.2 A14B: the low-noise model)."}),
                "family": (experts, family),
                "dtype": (DTYPE_CHOICES, {"default": "bf16", "tooltip": DTYPE_TOOLTIP}),
            }
        }

    def load(self, model_name: str, model_name_2: str, family: str, dtype: str = "bf16") -> tuple[BladeModel]:
        from ..blade_ops.families import get_family

        if family not in _expert_families():
            raise ValueError(f"BLADE Model Loader (two experts): family={family!r} is not one of "
                             f"{_expert_families()} (the families with two experts).")
        second = get_family(family).expert_names[1]
        path = bridge.resolve_model_path(model_name, "diffusion_models")
        path_2 = bridge.resolve_model_path(model_name_2, "diffusion_models")
        bundle = _load(path, ("transformer",), family, dtype, expert_paths={second: path_2})
        log.info("BLADE: loaded %s experts from %s and %s", bundle.family.name, path, path_2)
        return (BladeModel(bundle),)


class BladeVAELoader:
    """Load the Wan2.1 or CogVideoX VAE."""

    DESCRIPTION = (
        "Loads the video VAE from models/vae (e.g. wan_2.1_vae.safetensors) or from a diffusers folder in "
        "models/diffusers. Feeds BLADE VAE Decode."
    )
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (BLADE_VAE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The VAE that turns latents into frames.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "vae_name": (
                    bridge.model_choices("vae", diffusers=True),
                    {"tooltip": "VAE file in models/vae, or a diffusers folder in models/diffusers."},
                ),
                "family": (FAMILY_CHOICES, {"default": "auto", "tooltip": FAMILY_TOOLTIP}),
                "dtype": (DTYPE_CHOICES, {"default": "bf16", "tooltip": DTYPE_TOOLTIP}),
            }
        }

    def load(self, vae_name: str, family: str = "auto", dtype: str = "bf16") -> tuple:
        path = bridge.resolve_model_path(vae_name, "vae", diffusers=True)
        bundle = _load(path, ("vae",), family, dtype)
        log.info("BLADE: loaded %s VAE from %s", bundle.family.name, path)
        return (bundle,)


class BladeTextEncoderLoader:
    """Load the family's T5 text encoder and tokenizer."""

    DESCRIPTION = (
        "Loads the model's text encoder (UMT5-XXL for Wan2.1, T5-XXL for CogVideoX) with its tokenizer from a "
        "single file in models/text_encoders (e.g. umt5_xxl_fp16.safetensors, which carries its tokenizer; a T5-XXL "
        "file needs its tokenizer folder beside it), a text encoder folder there, or a diffusers folder in "
        "models/diffusers. Or use CLIPLoader (type wan) + CLIPTextEncode + BLADE Conditioning To Embeds."
    )
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (BLADE_TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("Text encoder and tokenizer, for BLADE Text Encode.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "text_encoder_name": (
                    bridge.model_choices("text_encoders", diffusers=True),
                    {"tooltip": "A single .safetensors file in models/text_encoders (ComfyUI's umt5_xxl / t5xxl "
                     "files), a text encoder folder there (config.json, safetensors, tokenizer files), or a "
                     "diffusers folder in models/diffusers (its text_encoder/ and tokenizer/ are used)."},
                ),
                "family": (FAMILY_CHOICES, {"default": "auto", "tooltip": FAMILY_TOOLTIP}),
                "dtype": (DTYPE_CHOICES, {"default": "bf16", "tooltip": DTYPE_TOOLTIP}),
            }
        }

    def load(self, text_encoder_name: str, family: str = "auto", dtype: str = "bf16") -> tuple:
        path = bridge.resolve_model_path(text_encoder_name, "text_encoders", diffusers=True)
        if path.is_file():
            bundle = _load_text_encoder_file(path, family, dtype)
        else:
            bundle = _load(path, ("text_encoder", "tokenizer"), family, dtype)
        log.info("BLADE: loaded %s text encoder from %s", bundle.family.name, path)
        return (bundle,)


NODES = {
    "BladeModelLoader": (BladeModelLoader, "BLADE Model Loader"),
    "BladeExpertsModelLoader": (BladeExpertsModelLoader, "BLADE Model Loader (two experts)"),
    "BladeVAELoader": (BladeVAELoader, "BLADE VAE Loader"),
    "BladeTextEncoderLoader": (BladeTextEncoderLoader, "BLADE Text Encoder Loader"),
}
