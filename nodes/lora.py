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
        "fails at once with a message naming what it was made for. On a two-expert model (Wan2.2 A14B) it goes on "
        "the first expert; BLADE LoRA Loader (expert) picks the expert."
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


EXPERT_NODE_NAME = "BLADE LoRA Loader (expert)"


def _expert_names() -> list[str]:
    """Every expert name a registered family uses, first experts first ("transformer", "transformer_2")."""
    from ..blade_ops.families import FAMILIES

    return list(dict.fromkeys(n for f in FAMILIES.values() for n in f.expert_names))


def _expert_tooltip() -> str:
    from ..blade_ops.families import FAMILIES

    described = [
        f"{f.label}: " + ", ".join(f"{n} = its {label} expert" for n, label in zip(f.expert_names, f.expert_labels,
                                                                                     strict=True))
        for f in FAMILIES.values() if len(f.expert_names) > 1
    ]
    return ("Which transformer gets the LoRA. " + "; ".join(described)
            + ". One-transformer models have only 'transformer'. A LoRA distilled by training.distill records its "
            "expert in its metadata (blade.expert); put it on that one.")


class BladeExpertLoraLoader:
    """Apply a LoRA to one named expert of a model that runs several transformers (each expert has its own slot)."""

    DESCRIPTION = (
        "Adds a LoRA from models/loras to one expert of a two-expert model (Wan2.2 A14B: transformer = high-noise, "
        "transformer_2 = low-noise expert), e.g. a high-noise and a low-noise LoRA with one node each. On a "
        "one-transformer model only 'transformer' applies. The file is checked against that expert here."
    )
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = (BLADE_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A clone of the model with the LoRA on that expert; the input model is unchanged.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        names = _expert_names()
        return {
            "required": {
                "model": (BLADE_MODEL, {"tooltip": "From a BLADE model loader, BLADE ASA or another BLADE LoRA."}),
                "lora_name": (bridge.model_choices("loras"), {"tooltip": "LoRA file in models/loras."}),
                "strength": ("FLOAT", dict(STRENGTH)),
                "expert": (names, {"default": names[0], "tooltip": _expert_tooltip()}),
            }
        }

    def patch(self, model: BladeModel, lora_name: str, strength: float = 1.0,
              expert: str = "transformer") -> tuple[BladeModel]:
        from ..blade_ops.lora import check_lora_fits, read_lora

        strength = finite_float(strength, "strength", EXPERT_NODE_NAME, STRENGTH)
        try:
            model.family.expert_index(expert)
        except ValueError as err:
            raise ValueError(f"{EXPERT_NODE_NAME}: {err}") from None
        path = bridge.resolve_model_path(lora_name, "loras")
        lora = read_lora(path)
        check_lora_fits(getattr(model.bundle, expert), lora)
        return (model.with_lora(LoraPatch(path=path, strength=strength, lora=lora, expert=expert)),)


NODES = {
    "BladeLoraLoader": (BladeLoraLoader, NODE_NAME),
    "BladeExpertLoraLoader": (BladeExpertLoraLoader, EXPERT_NODE_NAME),
}
