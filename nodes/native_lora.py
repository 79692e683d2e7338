"""BLADE LoRA for ComfyUI's own Wan models (MODEL -> MODEL), through core's patcher.

Core's LoRA loader at a125cd8 maps kohya (``lora_unet_blocks_0_self_attn_q``) and ``diffusion_model.``-prefixed
keys for Wan, but has no map for the diffusers naming BLADE releases (``transformer.blocks.0.attn1.to_q``): it
skips every such key with a "lora key not loaded" line and samples the base model. Here the file is read by the
pack (every naming, checked, normalised to diffusers module paths), each module is mapped to core's key
(``diffusion_model.blocks.0.self_attn.q.weight``) and the patches go through core's own ``comfy.lora.load_lora``
and ``ModelPatcher.add_patches``, so they apply to fp8 and offloaded weights, and to ComfyUI-GGUF's quantised ones
through its own patcher, and come off the way core removes patches. A LoRA of which any module has no place in
the model is refused whole, never applied in part.
"""

from __future__ import annotations

import logging

import torch

from . import comfy_bridge as bridge
from .inputs import float_inputs
from .native_asa import require_wan
from .native_attention import LORA_SETTINGS_KEY
from .types import CATEGORY

log = logging.getLogger(__name__)

NODE_NAME = "BLADE LoRA (ComfyUI model)"


def core_lora_patches(model, lora) -> dict:
    """Core weight patches for a pack LoRAFile on a core Wan ModelPatcher: {model key: patch}.

    Raises ValueError naming the modules that have no place in the model (missing key or other shape).
    """
    import comfy.lora

    from ..blade_ops.models.keymaps import wan_transformer_key_to_original

    # The parameters themselves, not state_dict(): ComfyUI-GGUF's layers save quantised weights as meta tensors of
    # their packed byte shape (a Q8_0 256x256 weight saves as 256x272); its parameters report the real shape.
    weights = dict(model.model.named_parameters())
    tensors: dict[str, torch.Tensor] = {}
    key_map: dict[str, str] = {}
    missing, wrong_shape = [], []
    for module in lora.modules:
        key = "diffusion_model." + wan_transformer_key_to_original(module + ".weight")
        down = lora.state_dict[module + ".lora_A.weight"]
        up = lora.state_dict[module + ".lora_B.weight"]
        if key not in weights:
            missing.append(f"{module} -> {key}")
            continue
        shape = tuple(weights[key].shape)
        if shape != (up.shape[0], down.shape[1]):
            wrong_shape.append(f"{module}: LoRA {up.shape[0]}x{down.shape[1]}, model {'x'.join(map(str, shape))}")
            continue
        key_map[module] = key
        tensors[module + ".lora_A.weight"] = down
        tensors[module + ".lora_B.weight"] = up
        tensors[module + ".alpha"] = torch.tensor(float(lora.alphas.get(module, down.shape[0])))
        bias = lora.state_dict.get(module + ".lora_B.bias")
        if bias is not None:
            tensors[module + ".diff_b"] = bias * lora.scale(module)
    if missing or wrong_shape:
        what = lora.info.family or "an unknown model"
        detail = "; ".join((missing + wrong_shape)[:5])
        raise ValueError(
            f"{NODE_NAME}: {len(missing) + len(wrong_shape)} of the LoRA's {len(lora.modules)} modules do not fit "
            f"this Wan model (e.g. {detail}). Its keys look like {what}; pick a LoRA made for this model (a Wan2.1 "
            "1.3B LoRA does not fit the 14B model). Nothing was applied."
        )
    patches = comfy.lora.load_lora(tensors, key_map, log_missing=False)
    return patches


def _recorded_asa(lora, name: str) -> dict | None:
    """The ASA settings the LoRA records (``blade.asa``), or None when it records none or unreadable ones."""
    from ..blade_ops.attention.config import ASAConfig

    settings = lora.info.asa
    if settings is None:
        return None
    try:
        ASAConfig.from_dict(dict(settings))
    except (TypeError, ValueError) as err:
        log.warning("%s: %s records ASA settings that cannot be read (%s); they are ignored.", NODE_NAME, name, err)
        return None
    return dict(settings)


class BladeNativeLoRA:
    """A LoRA (BLADE's release naming, kohya or original Wan) on a MODEL from ComfyUI's loaders."""

    DESCRIPTION = (
        "Adds a LoRA from models/loras to a Wan MODEL from ComfyUI's loaders: BLADE's 8-step LoRA "
        "(pytorch_lora_weights.safetensors, diffusers naming, which core's LoRA loader skips) or any Wan LoRA in "
        "kohya or original Wan naming. Applied through ComfyUI's own patcher, so it works on fp8, GGUF "
        "(ComfyUI-GGUF's Unet Loader) and offloaded weights. A LoRA that does not fit the model is refused whole. "
        "The ASA settings a BLADE LoRA records reach "
        "BLADE ASA (ComfyUI model) when its settings say so."
    )
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A clone of the model with the LoRA patches added; the input model is unchanged.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A Wan model from Load Diffusion Model (with or without BLADE ASA)."}),
                "lora_name": (bridge.model_choices("loras"), {"tooltip": "LoRA file in models/loras."}),
                "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                       "tooltip": "How strongly the LoRA modifies the model; 1.0 as distilled."}),
            }
        }

    def patch(self, model, lora_name: str, strength: float = 1.0):
        from ..blade_ops.lora import read_lora

        strength = float_inputs(BladeNativeLoRA, NODE_NAME, strength=strength)["strength"]
        require_wan(model, NODE_NAME)
        path = bridge.resolve_model_path(lora_name, "loras")
        lora = read_lora(path)
        patches = core_lora_patches(model, lora)
        patched = model.clone()
        applied = set(patched.add_patches(patches, float(strength)))
        if applied != set(patches):
            raise RuntimeError(
                f"{NODE_NAME}: ComfyUI took {len(applied)} of {len(patches)} patches of {path.name}; nothing should "
                "be missing at this point. Please report this with the model and LoRA files."
            )
        options = patched.model_options["transformer_options"]
        options[LORA_SETTINGS_KEY] = list(options.get(LORA_SETTINGS_KEY, ())) + [_recorded_asa(lora, path.name)]
        log.info("%s: %s, %d weight patches at strength %g", NODE_NAME, path.name, len(patches), strength)
        return (patched,)


NODES = {"BladeNativeLoRA": (BladeNativeLoRA, NODE_NAME)}
