"""Export the student LoRA as BLADE releases it: ``pytorch_lora_weights.safetensors`` in diffusers/peft naming
(``transformer.blocks.{i}.attn1.to_q.lora_A.weight``) with metadata (base model, rank, alpha, steps, ASA settings),
written by blade_ops.lora.save_lora so the nodes' loader reads it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from blade_ops.lora.formats import save_lora

from .models import STUDENT, lora_state

EXPORT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def export_student_lora(
    transformer: nn.Module, path: str | Path, metadata: dict[str, Any], dtype: str = "bf16", adapter: str = STUDENT
) -> Path:
    """Write one adapter of ``transformer`` to ``path`` (.safetensors) in ``dtype``; returns the path."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype={dtype!r}; valid: {sorted(EXPORT_DTYPES)}.")
    state = {k: v.detach().to("cpu", EXPORT_DTYPES[dtype]) for k, v in lora_state(transformer, adapter).items()}
    if not state:
        raise RuntimeError(f"The transformer has no LoRA adapter named {adapter!r} to export.")
    return save_lora(path, state, metadata)
