"""Helpers for the model-loading tests: tiny-model forwards and files written in each supported key layout."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

from blade_ops.models.tiny import tiny_transformer_config

# Wan's head count is invisible in its weights (qk-norm spans all heads); the tiny model has 2 heads x 12.
WAN_TINY_HEADS = {"num_attention_heads": 2, "attention_head_dim": 12}
# GroupNorm's group count is invisible too; the tiny CogVideoX VAE uses 2 groups.
COG_TINY_VAE = {"norm_num_groups": 2}


def save(state_dict: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return path


def write_header_only(shapes: dict[str, tuple[int, ...]], path: Path, dtype: str = "BF16") -> Path:
    """A sparse safetensors file with these shapes (all zeros, no disk used): stands in for a full-size release."""
    header, offset = {}, 0
    for k, s in shapes.items():
        n = 2 * int(torch.Size(s).numel())
        header[k] = {"dtype": dtype, "shape": list(s), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return path


def meta_state_shapes(cls, config: dict) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of a full-size model built without allocating weights."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls.from_config(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def wan_forward(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 2, 4, 4, generator=g)
    text = torch.randn(1, 5, tiny_transformer_config("wan")["text_dim"], generator=g)
    p = model.patch_embedding.weight
    with torch.no_grad():
        return model(x.to(p.dtype), torch.tensor([500.0]), text.to(p.dtype)).sample.float()


def cog_forward(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, 16, 8, 8, generator=g)  # [B, F, C, H, W]
    text = torch.randn(1, 4, tiny_transformer_config("cogvideox")["text_embed_dim"], generator=g)
    with torch.no_grad():
        return model(x, text, torch.tensor([500])).sample.float()


def meta_tensors(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Shape-only tensors, to run key conversions on full-size layouts without memory."""
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def fp8_scaled(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """``state_dict`` (original Wan keys) as ComfyUI's fp8_scaled files hold it: every 2-D block weight as
    float8_e4m3fn with its ``scale_weight`` (weight = fp8.float() * scale), the ``scaled_fp8`` marker, others bf16."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("blocks.") and key.endswith(".weight") and value.dim() == 2:
            scale = value.abs().amax().float() / 448.0
            out[prefix + key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[prefix + key[: -len("weight")] + "scale_weight"] = scale.reshape(1)
        else:
            out[prefix + key] = value.to(torch.bfloat16)
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out


def dequantised(fp8_file: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """What an fp8_scaled state dict stands for (original keys, prefix removed): weight.float() * scale_weight."""
    out = {}
    for key, value in fp8_file.items():
        if key == "scaled_fp8" or key.endswith(".scale_weight"):
            continue
        scale = fp8_file.get(key[: -len("weight")] + "scale_weight")
        out[key[len(prefix):]] = value.float() * scale if scale is not None else value.float()
    return out


def a14b_expert_files(directory: Path, high: str = "high.safetensors", low: str = "low.safetensors"):
    """Two tiny Wan2.2 A14B experts (seeds 1 and 2) with 128-wide heads, as the released files have, so a loader
    infers every setting from the shapes; saved as ComfyUI ships them: high-noise fp8_scaled, low-noise fp32, original
    Wan keys. Returns (experts, high path, low path)."""
    from diffusers import WanTransformer3DModel

    from blade_ops.families import WAN22_A14B
    from blade_ops.models import keymaps

    config = dict(tiny_transformer_config(WAN22_A14B.name), num_attention_heads=1, attention_head_dim=128,
                  num_layers=1)
    experts = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        experts.append(WanTransformer3DModel(**config).eval())
    directory = Path(directory)
    high_path = save(fp8_scaled(keymaps.wan_transformer_to_original(experts[0].state_dict())), directory / high)
    low_path = save(keymaps.wan_transformer_to_original(experts[1].state_dict()), directory / low)
    return experts, high_path, low_path
