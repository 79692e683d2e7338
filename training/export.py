"""Export the student LoRA as BLADE releases it: ``pytorch_lora_weights.safetensors`` in diffusers/peft naming
(``transformer.blocks.{i}.attn1.to_q.lora_A.weight``) with metadata (base model, rank, alpha, steps, ASA settings),
written by blade_ops.lora.save_lora so the nodes' loader reads it back.

The file is written atomically: to a temporary file in the same folder, fsync'ed, then renamed over the final name
(:func:`training.durable.atomic_path`), so an earlier LoRA at that path stays whole until the new one is complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from blade_ops.lora.formats import save_lora

from .checkpoint import non_finite
from .durable import atomic_path, disk_full_error, is_disk_full
from .errors import NonFiniteLossError
from .models import STUDENT, lora_state

EXPORT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def export_student_lora(
    transformer: nn.Module, path: str | Path, metadata: dict[str, Any], dtype: str = "bf16", adapter: str = STUDENT
) -> Path:
    """Write one adapter of ``transformer`` to ``path`` (.safetensors) in ``dtype``; returns the path.

    Refuses non-finite weights (NonFiniteLossError); a full disk raises DiskFullError saying how much is needed.
    """
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype={dtype!r}; valid: {sorted(EXPORT_DTYPES)}.")
    state = {k: v.detach().to("cpu", EXPORT_DTYPES[dtype]) for k, v in lora_state(transformer, adapter).items()}
    if not state:
        raise RuntimeError(f"The transformer has no LoRA adapter named {adapter!r} to export.")
    if (where := non_finite(state)) is not None:
        raise NonFiniteLossError(
            int(metadata.get("training_steps", -1)),
            f"Refusing to export the {adapter} LoRA to {path}: {where} is not finite in {dtype} (fp16 overflows "
            "above 65504; try export_dtype bf16 or fp32).",
        )
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            save_lora(tmp, state, metadata)
    except Exception as err:
        if is_disk_full(err):
            needed = sum(t.numel() * t.element_size() for t in state.values()) + 64 * 1024
            raise disk_full_error(err, path.parent, needed, "the LoRA") from err
        raise
    return path
