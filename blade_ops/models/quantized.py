"""ComfyUI's "fp8_scaled" single files, dequantised on load; newer quantised repacks refused with a clear message.

An fp8_scaled file (e.g. ``wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors``) stores most linear weights as
``float8_e4m3fn`` with a per-layer ``<layer>.scale_weight`` (and optionally ``<layer>.scale_input``, a hint for fp8
matrix products), and a marker tensor ``scaled_fp8`` (top level or under the part's prefix). The weight is
``weight.float() * scale_weight``: that is what is loaded, in the requested dtype. Files without the marker but with
plain float8 weights load as their values (scale 1).

Repacks that carry ``_quantization_metadata`` (int8 ConvRot, nvfp4, per-layer ``.comfy_quant`` entries) use block
formats that cannot be turned back into weights by one scale, so they are refused, naming what to use instead.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from pathlib import Path

import torch

from .files import read_header

MARKER = "scaled_fp8"
SCALE_WEIGHT = ".scale_weight"
SCALE_INPUT = ".scale_input"
QUANT_METADATA = "_quantization_metadata"
QUANT_KEY_SUFFIX = ".comfy_quant"


def _raw_metadata(path: Path) -> dict[str, str]:
    """The safetensors ``__metadata__`` mapping (empty when the file has none); the file was checked already."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def check_supported_quantization(path: str | Path, keys: Iterable[str] | None = None) -> None:
    """Raise ValueError for a quantised format other than fp8_scaled (``_quantization_metadata`` repacks)."""
    path = Path(path)
    keys = list(read_header(path) if keys is None else keys)
    block = [k for k in keys if k.endswith(QUANT_KEY_SUFFIX)]
    if QUANT_METADATA in _raw_metadata(path) or block:
        raise ValueError(
            f"{path} is a quantised repack with {QUANT_METADATA} (int8 ConvRot / nvfp4 blocks"
            f"{', e.g. ' + block[0] if block else ''}), which BLADE cannot turn back into weights. Use the bf16, "
            "fp16 or fp8_scaled release of the same model (ComfyUI's *_bf16 / *_fp16 / *_fp8_scaled files), or load "
            "this file with ComfyUI's own loaders and the BLADE nodes for ComfyUI models."
        )


def is_quantization_extra(key: str, prefix: str = "") -> bool:
    """Whether ``key`` is a scale or marker entry of an fp8_scaled file rather than a weight of the model."""
    return key.endswith((SCALE_WEIGHT, SCALE_INPUT)) or key in (MARKER, prefix + MARKER)


def scale_keys(weight_keys: Iterable[str], available: Iterable[str]) -> list[str]:
    """The ``.scale_weight`` entries of ``weight_keys`` that the file holds."""
    have = set(available)
    out = []
    for key in weight_keys:
        if key.endswith(".weight"):
            scale = key[: -len(".weight")] + SCALE_WEIGHT
            if scale in have:
                out.append(scale)
    return out


def dequantize(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold every ``<layer>.scale_weight`` into ``<layer>.weight`` (weight.float() * scale, float32) and drop the
    scale, input-scale and marker entries. Other tensors are returned as they are."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if is_quantization_extra(key):
            continue
        scale = tensors.get(key[: -len(".weight")] + SCALE_WEIGHT) if key.endswith(".weight") else None
        if scale is not None:
            if scale.numel() != 1 and scale.shape[0] != value.shape[0]:
                raise ValueError(
                    f"{key}: scale_weight of shape {tuple(scale.shape)} fits neither one scale per tensor nor one "
                    f"per output row of the weight {tuple(value.shape)}."
                )
            shape = () if scale.numel() == 1 else (-1, *([1] * (value.dim() - 1)))
            value = value.float() * scale.float().reshape(shape)
        out[key] = value
    return out
