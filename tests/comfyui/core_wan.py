"""ComfyUI's own modules in this process, and tiny Wan files in the formats core's loaders read.

Core's loader infers a Wan model's geometry from its weights with three values fixed: head_dim 128, text_dim 4096
and freq_dim 256. The tiny models here keep those three and shrink the rest (2 blocks, 2 heads, ffn 64), so core
builds its own WanModel from them exactly as it does from the released files.

ComfyUI is imported from $COMFYUI_PATH when this Python can run it (its requirements installed; see README.md
"Testing inside ComfyUI"); otherwise the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")

CORE_TINY_WAN = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=64, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, rope_max_seq_len=1024,
)
VARIANTS = {
    "t2v": {},
    "ti2v_5b": dict(in_channels=48, out_channels=48),  # Wan2.2 TI2V-5B layout (48 latent channels)
    "i2v": dict(in_channels=36, image_dim=1280, added_kv_proj_dim=256),  # Wan2.1 I2V (CLIP image tokens)
}


def import_comfy() -> SimpleNamespace:
    """ComfyUI's modules the tests use, imported on the CPU; skips when no checkout is named or it cannot run."""
    if not COMFYUI_PATH:
        pytest.skip("set COMFYUI_PATH to a ComfyUI checkout to run the tests on ComfyUI's own models")
    root = Path(COMFYUI_PATH).resolve()
    if not (root / "comfy" / "sd.py").is_file():
        pytest.fail(f"COMFYUI_PATH={COMFYUI_PATH} is not a ComfyUI checkout (no comfy/sd.py).")
    if str(root) not in sys.path:
        sys.path.append(str(root))  # appended: the pack's own top-level `nodes` must not be shadowed
    try:
        cli_args = importlib.import_module("comfy.cli_args")
        cli_args.args.cpu = True
        names = ("sd", "sample", "samplers", "model_management", "lora", "utils", "patcher_extension",
                 "model_sampling", "ldm.wan.model")
        modules = {n.split(".")[-1]: importlib.import_module(f"comfy.{n}") for n in names}
    except ImportError as err:
        pytest.skip(f"ComfyUI at {root} cannot be imported by {sys.executable} ({err}); run pytest with the Python "
                    "that runs ComfyUI (COMFYUI_PYTHON) and the pack's requirements installed there")
    return SimpleNamespace(**modules, wan=modules["model"], root=root)


def tiny_diffusers_wan(variant: str = "t2v", seed: int = 0):
    """A diffusers WanTransformer3DModel at core-loadable tiny geometry, random weights (fp32)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(**{**CORE_TINY_WAN, **VARIANTS[variant]}).eval()
    with torch.no_grad():  # diffusers starts some tables at zero or one; random values test more of the maths
        for name, p in model.named_parameters():
            if name.endswith("scale_shift_table") or ".norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def core_state_dict(model, fmt: str = "fp32") -> dict[str, torch.Tensor]:
    """The transformer's weights as ComfyUI ships them: original Wan keys; ``fmt`` fp32, bf16, fp16 or fp8_scaled.

    fp8_scaled: every 2-D weight of the blocks as float8_e4m3fn with a per-layer ``scale_weight`` (weight =
    fp8.float() * scale) and the top-level ``scaled_fp8`` marker, the layout of ComfyUI's *_fp8_scaled files.
    """
    from blade_ops.models.keymaps import wan_transformer_to_original

    sd = {k: v.detach().clone() for k, v in wan_transformer_to_original(model.state_dict()).items()}
    if fmt in ("bf16", "fp16"):
        dtype = torch.bfloat16 if fmt == "bf16" else torch.float16
        return {k: v.to(dtype) for k, v in sd.items()}
    if fmt == "fp8_scaled":
        out = {}
        for k, v in sd.items():
            if k.startswith("blocks.") and k.endswith(".weight") and v.dim() == 2:
                scale = v.abs().amax().float() / 448.0
                out[k] = (v.float() / scale).to(torch.float8_e4m3fn)
                out[k[: -len("weight")] + "scale_weight"] = scale.reshape(1)
            else:
                out[k] = v.to(torch.bfloat16)
        out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
        return out
    if fmt != "fp32":
        raise ValueError(f"fmt={fmt!r}; valid: fp32, bf16, fp16, fp8_scaled.")
    return sd


def save_core_file(model, path: Path, fmt: str = "fp32", prefix: str = "") -> Path:
    from safetensors.torch import save_file

    sd = {prefix + k: v.contiguous() for k, v in core_state_dict(model, fmt).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path


def load_core(comfy: SimpleNamespace, path: Path, dtype: torch.dtype | None = torch.float32):
    """Core's loader (what UNETLoader calls): a ModelPatcher around core's WanModel."""
    options = {} if dtype is None else {"dtype": dtype}
    return comfy.sd.load_diffusion_model(str(path), model_options=options)


def conditioning(tokens: int = 8, seed: int = 1, batch: int = 1) -> list:
    """CONDITIONING as CLIPTextEncode gives it for Wan: [[tensor [B, tokens, 4096], {}]]."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, 4096, generator=g) * 0.5, {}]]


def sample(comfy: SimpleNamespace, model, sigmas: torch.Tensor, *, sampler: str = "uni_pc_bh2", seed: int = 0,
           latent_shape=(1, 16, 3, 32, 32), positive=None, cfg: float = 1.0) -> torch.Tensor:
    """Core's own sampling (comfy.sample.sample_custom), as SamplerCustomAdvanced runs it; returns the latent."""
    latent = torch.zeros(latent_shape)
    noise = torch.randn(latent_shape, generator=torch.Generator().manual_seed(seed))
    positive = positive if positive is not None else conditioning()
    negative = [[torch.zeros_like(positive[0][0]), {}]]
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        return comfy.sample.sample_custom(
            model, noise, cfg, comfy.samplers.sampler_object(sampler), sigmas, positive, negative, latent,
            disable_pbar=True, seed=seed,
        )


def core_forward(model, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, **kwargs) -> torch.Tensor:
    """One call of core's WanModel with the patcher's transformer options and wrappers (weights unpatched)."""
    options = dict(model.model_options["transformer_options"])
    options["wrappers"] = {k: dict(v) for k, v in model.wrappers.items()}
    with torch.no_grad():
        return model.model.diffusion_model(x, t, context, transformer_options=options, **kwargs)
