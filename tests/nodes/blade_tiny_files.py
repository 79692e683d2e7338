"""Tiny model files laid out like ComfyUI's models folder, shared by the node, workflow and server tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_NAMES = {"wan": "tiny_wan", "cogvideox": "tiny_cogvideox"}
LORA_NAMES = {"wan": "tiny_wan_blade_lora.safetensors", "cogvideox": "tiny_cogvideox_blade_lora.safetensors"}


def write_tiny_lora(family: str, path: Path, rank: int = 4, seed: int = 0) -> Path:
    """A LoRA in BLADE's release naming on every attention projection of the tiny transformer."""
    from blade_ops.lora import lora_target_modules, save_lora
    from blade_ops.models.tiny import tiny_transformer

    transformer = tiny_transformer(family)
    targets = tuple(lora_target_modules(family))
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and ".attn" in name and name.endswith(targets):
            state[f"{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=gen) * 0.05
            state[f"{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=gen) * 0.05
    return save_lora(path, state, {"family": family, "rank": rank, "alpha": rank, "steps": 8})


def populate_models_dir(root: Path, families=("wan", "cogvideox")) -> Path:
    """models/diffusers/tiny_<family>/ (every part) and models/loras/tiny_<family>_blade_lora.safetensors."""
    from blade_ops.models.tiny import save_tiny_diffusers_folder

    for family in families:
        folder = root / "diffusers" / TINY_NAMES[family]
        if not (folder / "model_index.json").is_file():
            save_tiny_diffusers_folder(family, folder)
        lora = root / "loras" / LORA_NAMES[family]
        if not lora.is_file():
            lora.parent.mkdir(parents=True, exist_ok=True)
            write_tiny_lora(family, lora)
    return root


def tiny_api_workflow(api: dict, family: str) -> dict:
    """An API workflow with its model files swapped for the tiny ones and a size the tiny models take."""
    from blade_ops.models.tiny import tiny_video_size

    api = json.loads(json.dumps(api))
    size = tiny_video_size(family)
    swaps = {"model_name": TINY_NAMES[family], "vae_name": TINY_NAMES[family],
             "text_encoder_name": TINY_NAMES[family], "lora_name": LORA_NAMES[family], "dtype": "fp32"}
    for node in api.values():
        inputs = node["inputs"]
        for key, value in swaps.items():
            if key in inputs:
                inputs[key] = value
        if node["class_type"] == "BladeSampler":
            inputs.update(size)
            inputs["steps"] = min(inputs["steps"], 3)
    return api
