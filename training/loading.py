"""Load the model parts training needs through the pack's loader (blade_ops.models.load_model_bundle)."""

from __future__ import annotations

from pathlib import Path

import torch

from blade_ops.models import load_model_bundle
from blade_ops.models.bundle import ModelBundle

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "no": torch.float32}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r}; valid: {sorted(DTYPES)}.")
    return DTYPES[name]


def load_parts(
    path: str | Path, parts: tuple[str, ...], *, family: str = "", dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> ModelBundle:
    """Bundle with the requested parts (transformer, vae, text_encoder, tokenizer) of a model folder or file."""
    return load_model_bundle(path, family=family or None, parts=tuple(parts), dtype=dtype, device=device)


def load_text_bundle(path: str | Path, *, device: torch.device | str = "cpu") -> ModelBundle:
    """Text encoder (fp32 on CPU, bf16 on GPU) + tokenizer of a model folder."""
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return load_parts(path, ("text_encoder", "tokenizer"), dtype=dtype, device=device)
