"""Modules the BLADE student LoRA trains (REFERENCE.md, "Sparsity-aware TDM distillation").

Rank 64, alpha 64 on to_q, to_k, to_v and to_out.0 of every attention: Wan has two per block (self attn1 and
cross attn2: 30 blocks x 8 = 240 modules in 1.3B), CogVideoX one joint attention (42 blocks x 4 = 168 in 5B).
"""

from __future__ import annotations

from ..families import get_family

STUDENT_RANK = 64
STUDENT_ALPHA = 64.0


def lora_target_modules(family: str) -> list[str]:
    """peft ``target_modules`` (module-name suffixes) of the student LoRA for a family (its adapter's)."""
    return list(get_family(family).lora_targets)


def student_lora_config(family: str, rank: int = STUDENT_RANK, alpha: float = STUDENT_ALPHA):
    """A ``peft.LoraConfig`` for the student (or fake-score) LoRA of a family."""
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1; got {rank}.")
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=lora_target_modules(family), init_lora_weights=True)
