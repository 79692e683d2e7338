"""Random LoRAs for the tiny models, written in each supported naming, and probes of the effective weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from blade_ops.lora.fit import linear_of

# diffusers module path suffix -> original Wan name (REFERENCE.md: ComfyUI users hold both namings)
_WAN_ORIGINAL = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}


@dataclass
class RandomLoRA:
    """Per module: A [r, in], B [out, r], alpha; the update is alpha / r * B @ A."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]]

    def delta(self, module: str) -> torch.Tensor:
        a, b, alpha = self.factors[module]
        return (b @ a) * (alpha / a.shape[0])


def target_modules(transformer: nn.Module, family: str) -> list[str]:
    """Every attention projection, plus the Wan feed-forward (to exercise ffn.0 / ffn.2 naming)."""
    names = []
    for name, module in transformer.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if name.endswith((".to_q", ".to_k", ".to_v", ".to_out.0")) or (family == "wan" and ".ffn." in name):
            names.append(name)
    return names


def random_lora(
    transformer: nn.Module, family: str, rank: int = 4, seed: int = 0, width: int | None = None,
    modules: list[str] | None = None,
) -> RandomLoRA:
    """A random LoRA for ``transformer``; every other module gets alpha != rank. ``width`` fakes another model size."""
    gen = torch.Generator().manual_seed(seed)
    factors = {}
    for i, name in enumerate(modules or target_modules(transformer, family)):
        linear = transformer.get_submodule(name)
        d_in = width or linear.in_features
        d_out = width if width and linear.out_features == linear.in_features else linear.out_features
        a = torch.randn(rank, d_in, generator=gen) * 0.3
        b = torch.randn(d_out, rank, generator=gen) * 0.3
        alpha = float(rank) if i % 2 == 0 else 2.5
        factors[name] = (a, b, alpha)
    return RandomLoRA(factors)


def write_diffusers(path: Path, lora: RandomLoRA) -> Path:
    """BLADE release naming: ``transformer.<module>.lora_A.weight``; alphas in diffusers' adapter metadata."""
    tensors, pattern = {}, {}
    rank = next(iter(lora.factors.values()))[0].shape[0]
    for name, (a, b, alpha) in lora.factors.items():
        tensors[f"transformer.{name}.lora_A.weight"] = a
        tensors[f"transformer.{name}.lora_B.weight"] = b
        if alpha != rank:
            pattern[f"^{name}"] = alpha
    meta = {"transformer.r": rank, "transformer.lora_alpha": rank, "transformer.alpha_pattern": pattern}
    save_file(tensors, str(path), metadata={"lora_adapter_metadata": json.dumps(meta)})
    return path


def write_kohya(path: Path, lora: RandomLoRA, family: str, flat: bool = False) -> Path:
    """kohya/ComfyUI naming with ``.alpha``: Wan ``diffusion_model.blocks.0.self_attn.q`` (or ``lora_unet_...``
    with ``flat``); CogVideoX keeps the diffusers module paths."""
    tensors = {}
    for name, (a, b, alpha) in lora.factors.items():
        if family == "wan":
            block, rest = name.split(".", 2)[1], name.split(".", 2)[2]
            key = f"diffusion_model.blocks.{block}.{_WAN_ORIGINAL[rest]}"
            if flat:
                key = "lora_unet_" + key.removeprefix("diffusion_model.").replace(".", "_")
        else:
            key = f"transformer.{name}"
        tensors[f"{key}.lora_down.weight"] = a
        tensors[f"{key}.lora_up.weight"] = b
        tensors[f"{key}.alpha"] = torch.tensor(alpha)
    save_file(tensors, str(path))
    return path


def write_original_wan(path: Path, lora: RandomLoRA, prefixed: bool = False) -> Path:
    """Original Wan naming: bare ``blocks.0.self_attn.q`` with alpha / r folded into lora_B, or with ``prefixed``
    ``diffusion_model.blocks.0.self_attn.q`` and ``.alpha`` tensors."""
    tensors = {}
    for name, (a, b, alpha) in lora.factors.items():
        block, rest = name.split(".", 2)[1], name.split(".", 2)[2]
        key = f"blocks.{block}.{_WAN_ORIGINAL[rest]}"
        if prefixed:
            key = "diffusion_model." + key
            tensors[f"{key}.alpha"] = torch.tensor(alpha)
        tensors[f"{key}.lora_A.weight"] = a
        tensors[f"{key}.lora_B.weight"] = b if prefixed else b * (alpha / a.shape[0])
    save_file(tensors, str(path))
    return path


FORMATS = {
    "wan": ["diffusers", "kohya", "kohya_flat", "original_wan", "original_wan_prefixed"],
    "cogvideox": ["diffusers", "kohya"],
}
EXPECTED_SOURCE = {"diffusers": "diffusers", "kohya": "kohya", "kohya_flat": "kohya", "original_wan": "original_wan",
                   "original_wan_prefixed": "original_wan"}


def write(kind: str, path: Path, lora: RandomLoRA, family: str) -> Path:
    """``lora`` written as ``path/<kind>.safetensors`` in one of the namings of FORMATS."""
    path = path / f"{kind}.safetensors"
    if kind == "diffusers":
        return write_diffusers(path, lora)
    if kind == "kohya":
        return write_kohya(path, lora, family)
    if kind == "kohya_flat":
        return write_kohya(path, lora, family, flat=True)
    return write_original_wan(path, lora, prefixed=kind.endswith("prefixed"))


@torch.no_grad()
def effective_weight(transformer: nn.Module, name: str) -> torch.Tensor:
    """The [out, in] matrix a linear layer (peft-wrapped or not) applies, probed through its forward."""
    module = transformer.get_submodule(name)
    d_in = linear_of(module).in_features
    eye = torch.eye(d_in)
    return (module(eye) - module(torch.zeros(1, d_in))).T


def base_weights(transformer: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    return {n: linear_of(transformer.get_submodule(n)).weight.detach().clone() for n in names}


def model_inputs(family: str, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if family == "wan":
        hidden = torch.randn(1, 16, 2, 4, 4, generator=gen)
    else:
        hidden = torch.randn(1, 3, 16, 4, 4, generator=gen)
    return {
        "hidden_states": hidden,
        "encoder_hidden_states": torch.randn(1, 6, 32, generator=gen),
        "timestep": torch.tensor([500]),
    }


@torch.no_grad()
def run(transformer: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return transformer(**inputs, return_dict=False)[0]
