"""BLADE ASA for ComfyUI's own Wan models (MODEL -> MODEL): the models core's loaders give (bf16, fp16,
fp8_scaled, GGUF through its custom loader; Wan2.1 T2V/I2V, Wan2.2 TI2V-5B and both A14B experts).

Like core's own patch nodes it clones the model and attaches state to the clone: the attention override (on top of
any override already there, re-put on top before each step on ComfyUI versions that pass the run's options to
ON_PREPARE_STATE), a DIFFUSION_MODEL wrapper that records the token grid, and run callbacks that reset the state and
log the density ASA kept.
"""

from __future__ import annotations

import logging

from ..blade_ops.families import WAN
from .asa import ESTIMATE_INPUT, asa_inputs, asa_request, parse_layers
from .inputs import float_inputs
from .native_attention import PATCH_KEY, NativeASAState, grid_wrapper, put_on_top
from .types import CATEGORY

log = logging.getLogger(__name__)

NODE_NAME = "BLADE ASA (ComfyUI model)"


def require_wan(model, node: str):
    """The core WanModel inside a ModelPatcher, or a ValueError saying which model this node takes."""
    try:
        diffusion_model = model.get_model_object("diffusion_model")
    except (AttributeError, KeyError):
        raise ValueError(
            f"{node} takes a MODEL from ComfyUI's loaders (Load Diffusion Model / UNETLoader); got "
            f"{type(model).__name__}. For the pack's own loaders use the BLADE ASA node."
        ) from None
    from comfy.ldm.wan.model import WanModel

    if not isinstance(diffusion_model, WanModel):
        raise ValueError(
            f"{node} patches Wan models (Wan2.1, Wan2.2); this MODEL is {type(diffusion_model).__name__}. "
            "Load a Wan checkpoint with Load Diffusion Model, or use core's Model Sparse Attention for other models."
        )
    return diffusion_model


def apply_native_asa(model, state: NativeASAState):
    """A clone of the core ModelPatcher ``model`` with ``state``'s ASA attached (the input is not changed)."""
    from comfy.patcher_extension import CallbacksMP, WrappersMP

    patched = model.clone()
    for call_type in (CallbacksMP.ON_PREPARE_STATE, CallbacksMP.ON_PRE_RUN, CallbacksMP.ON_CLEANUP):
        patched.remove_callbacks_with_key(call_type, PATCH_KEY)  # a second ASA node replaces the first
    patched.remove_wrappers_with_key(WrappersMP.DIFFUSION_MODEL, PATCH_KEY)
    put_on_top(state, patched.model_options["transformer_options"])

    def on_prepare_state(model_patcher, timestep, model_options=None):
        if model_options is not None:  # ComfyUI versions that pass the run's options: stay on top of later patches
            put_on_top(state, model_options.setdefault("transformer_options", {}))

    def on_pre_run(model_patcher):
        state.begin_run(model_patcher.get_model_object("model_sampling"))

    patched.add_callback_with_key(CallbacksMP.ON_PREPARE_STATE, PATCH_KEY, on_prepare_state)
    patched.add_callback_with_key(CallbacksMP.ON_PRE_RUN, PATCH_KEY, on_pre_run)
    patched.add_callback_with_key(CallbacksMP.ON_CLEANUP, PATCH_KEY, lambda model_patcher: state.end_run())
    patched.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, PATCH_KEY, grid_wrapper(state))
    return patched


class BladeNativeASA:
    """ASA on a MODEL from ComfyUI's own loaders."""

    DESCRIPTION = (
        "Adaptive block-sparse attention (BLADE) on a Wan MODEL from ComfyUI's loaders (bf16, fp16, fp8_scaled, "
        "GGUF; Wan2.1 and Wan2.2, each A14B expert on its own). Self-attention keeps only the 128x128 blocks a "
        "cheap estimate says matter, plus a pooled global branch; cross-attention and anything ASA cannot take "
        "go to the attention that was there before (sage attention, core's Model Sparse Attention, or dense). "
        "With the BLADE LoRA (BLADE LoRA, ComfyUI model) and the BLADE schedule it gives 8-step videos without "
        "CFG; without a LoRA it is training-free sparse attention. The density it kept is logged per run. To "
        "compile, chain core's TorchCompileModel (backend inductor) before or after it: ASA's attention stays "
        "eager with its own kernels, the rest of the model compiles once, and the same graph run again compiles "
        "nothing."
    )
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A clone of the model with ASA; the input model is unchanged.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A Wan model from Load Diffusion Model (or another core loader)."}),
                **asa_inputs(dense_label="dense_blocks"),
                "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                            "tooltip": "Sampling progress at which sparse attention starts; "
                                            "before it, attention stays dense."}),
                "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                          "tooltip": "Sampling progress at which sparse attention ends; after it, "
                                          "attention is dense again."}),
            },
            "optional": dict(ESTIMATE_INPUT),
        }

    def patch(
        self,
        model,
        settings: str = "LoRA's, else family defaults",
        backend: str = "auto",
        tau: float = 0.95,
        min_ratio: float = 0.05,
        max_ratio: float = 0.17,
        num_keep: int = 32,
        use_global: bool = True,
        sample_gap: int = 30,
        dense_steps: int = 0,
        dense_blocks: str = "",
        start_percent: float = 0.0,
        end_percent: float = 1.0,
        estimate_precision: str | None = None,
    ):
        from ..blade_ops.attention.backends import get_backend

        floats = float_inputs(BladeNativeASA, NODE_NAME, tau=tau, min_ratio=min_ratio, max_ratio=max_ratio,
                              start_percent=start_percent, end_percent=end_percent)
        start_percent, end_percent = floats.pop("start_percent"), floats.pop("end_percent")
        diffusion_model = require_wan(model, NODE_NAME)
        blocks = parse_layers(dense_blocks, "dense_blocks")
        num_blocks = len(diffusion_model.blocks)
        if any(i >= num_blocks for i in blocks):
            raise ValueError(
                f"{NODE_NAME}: dense_blocks {[i for i in blocks if i >= num_blocks]} out of range for a model with "
                f"{num_blocks} blocks (valid: 0..{num_blocks - 1})."
            )
        if start_percent > end_percent:
            raise ValueError(f"{NODE_NAME}: start_percent={start_percent} must be <= end_percent={end_percent}.")
        request = asa_request(
            NODE_NAME, WAN.name, settings=settings, backend=backend, **floats, num_keep=num_keep,
            use_global=use_global, sample_gap=sample_gap, dense_steps=dense_steps,
            dense_layers=blocks, estimate_precision=estimate_precision,
        )
        if backend != "auto":
            get_backend(backend)  # a missing kernel package is an error now, naming how to get it
        state = NativeASAState(request, start_percent, end_percent)
        return (apply_native_asa(model, state),)


NODES = {"BladeNativeASA": (BladeNativeASA, NODE_NAME)}
