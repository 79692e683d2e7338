"""Small test inputs shared across test folders: ASA settings for the tiny models and a random attention LoRA."""

from __future__ import annotations

from pathlib import Path

import torch

from blade_ops.attention import ASAConfig
from blade_ops.lora import save_lora

# 16-token blocks so the tiny models' few dozen tokens still make several blocks.
ALL_KEPT = ASAConfig(block_size=16, num_keep=4, tau=1.0, min_ratio=1.0, max_ratio=1.0, sample_gap=4)
SPARSE = ASAConfig(block_size=16, num_keep=4, tau=0.5, min_ratio=0.2, max_ratio=0.3, sample_gap=4)


def attention_lora(transformer: torch.nn.Module, path: Path, *, alpha: float = 2.0, seed: int = 1) -> str:
    """A random rank-4 LoRA on every attention projection, large enough to change the output, in BLADE's format."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith((".to_q", ".to_k", ".to_v", ".to_out.0")):
            state[f"{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=g) * 0.3
            state[f"{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=g) * 0.3
    return str(save_lora(Path(path) / "lora.safetensors", state, {"rank": 4, "alpha": alpha}))
