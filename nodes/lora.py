"""BLADE LoRA node: add a LoRA from ComfyUI's loras folder to a clone of the model (chainable)."""

from __future__ import annotations

from . import comfy_bridge as bridge
from .inputs import finite_float
from .types import BLADE_MODEL, CATEGORY, BladeModel, LoraPatch

NODE_NAME = "BLADE LoRA Loader"
STRENGTH = {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
            "tooltip": "How strongly the LoRA modifies the model; 1.0 as distilled, 0 turns it off."}


class BladeLoraLoader:
    """Apply a LoRA (BLADE's diffusers/peft files, kohya/ComfyUI or original Wan naming) to the transformer."""

    DESCRIPTION = (
        "Adds a LoRA from models/loras to the model: the BLADE 8-step LoRA (pytorch_lora_weights.safetensors, "
        "renamed as you like) or any Wan/CogVideoX LoRA in diffusers, kohya/ComfyUI or original Wan naming. "
        "Chain several to stack them. The file is checked against the model here, so a LoRA for another model "
        "fails at once with a message naming what it was made for."
    )
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = (BLADE_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A clone of the model with the LoRA added; the input model is unchanged.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (BLADE_MODEL, {"tooltip": "From BLADE Model Loader, BLADE ASA or another BLADE LoRA."}),
                "lora_name": (bridge.model_choices("loras"), {"tooltip": "LoRA file in models/loras."}),
                "strength": ("FLOAT", dict(STRENGTH)),
            }
        }

    def patch(self, model: BladeModel, lora_name: str, strength: float = 1.0) -> tuple[BladeModel]:
        from ..blade_ops.lora import check_lora_fits, read_lora

        strength = finite_float(strength, "strength", NODE_NAME, STRENGTH)
        path = bridge.resolve_model_path(lora_name, "loras")
        lora = read_lora(path)
        check_lora_fits(model.bundle.transformer, lora)
        return (model.with_lora(LoraPatch(path=path, strength=strength, lora=lora)),)


NODES = {"BladeLoraLoader": (BladeLoraLoader, NODE_NAME)}
