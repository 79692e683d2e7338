"""LoRA formats, loading and merging for Wan and CogVideoX transformers (BLADE LoRAs and community LoRAs).

Read a file in diffusers/peft, kohya or original-Wan naming with :func:`read_lora`, apply it unmerged (switchable)
or merged with :func:`apply_lora`, re-weight, switch, merge, unmerge and remove it by adapter name; training
exports its LoRA with :func:`save_lora`.
"""

from .apply import (
    AppliedLoRA,
    applied_loras,
    apply_lora,
    disable_loras,
    enable_loras,
    merge_loras,
    remove_lora,
    remove_loras,
    set_lora_strength,
    unmerge_loras,
)
from .fit import check_lora_fits, lora_fits
from .formats import SOURCE_FORMATS, LoRAFile, LoRAInfo, lora_from_state_dict, read_lora, save_lora
from .targets import STUDENT_ALPHA, STUDENT_RANK, lora_target_modules, student_lora_config

__all__ = [
    "SOURCE_FORMATS",
    "STUDENT_ALPHA",
    "STUDENT_RANK",
    "AppliedLoRA",
    "LoRAFile",
    "LoRAInfo",
    "applied_loras",
    "apply_lora",
    "check_lora_fits",
    "disable_loras",
    "enable_loras",
    "lora_fits",
    "lora_from_state_dict",
    "lora_target_modules",
    "merge_loras",
    "read_lora",
    "remove_lora",
    "remove_loras",
    "save_lora",
    "set_lora_strength",
    "student_lora_config",
    "unmerge_loras",
]
