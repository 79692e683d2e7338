"""BLADE Sampler node: embeddings -> video latents with the 8-step BLADE schedule, TDM, or the dense baseline.

The LATENT it returns is a normal ComfyUI latent: ``samples`` [B, C, T, H, W] in the VAE's own scale (what core's
Wan latent format produces after ``process_out``), so for Wan it also decodes with ComfyUI's VAE Decode. The exact
latents in the model's layout ride along under ``blade`` for BLADE VAE Decode.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack

import torch

from ..blade_ops.validation import SEED_MAX, check_seed
from . import comfy_bridge as bridge
from .inputs import finite_float
from .patching import patched
from .types import BLADE_EMBEDS, BLADE_MODEL, CATEGORY, BladeModel

log = logging.getLogger(__name__)

SCHEDULERS = ["blade", "tdm", "baseline"]
MAX_SEED = SEED_MAX  # the seed range of the command line and GenerationRequest too
OOM_ADVICE = (
    "Lower width, height or frames, load the model with dtype bf16/fp16, or close other programs using the GPU."
)


NODE_NAME = "BLADE Sampler"
# linear_precision choices -> whether the transformer blocks' linear layers run in fp8 (blade_ops.models.fp8_linear)
LINEAR_PRECISIONS = {"as loaded": False, "fp8_e4m3 (per-channel)": True}
GUIDANCE = {"default": 1.0, "min": 0.0, "max": 50.0, "step": 0.1, "round": 0.01,
            "tooltip": "CFG scale; 1.0 = off (BLADE). Above 1 uses the negative prompt and costs a second pass "
            "per step."}


def size_from_latent(latent: dict, family) -> tuple[int, int, int, int]:
    """(width, height, frames, batch) of a video LATENT [B, C, T, H, W] for ``family``'s VAE strides."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 5:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(
            f"The latent input has shape {shape}; BLADE Sampler needs a video LATENT [batch, 16, frames, height, "
            "width], e.g. from EmptyHunyuanLatentVideo / Wan's empty latent node. Or disconnect it and set the size."
        )
    b, _, t, h, w = samples.shape
    s = family.vae_spatial_stride
    return w * s, h * s, (t - 1) * family.vae_temporal_stride + 1, b


def _batched(embeds, batch: int):
    """Repeat a single prompt's embeddings over a latent batch; refuse other mismatches."""
    n = embeds.cond.shape[0]
    if n == batch:
        return embeds
    if n != 1:
        raise ValueError(
            f"{n} prompts were encoded but the latent batch is {batch}; make them equal or use one prompt."
        )
    rep = lambda x: None if x is None else x.expand(batch, *x.shape[1:]).clone()  # noqa: E731
    return type(embeds)(rep(embeds.cond), rep(embeds.uncond))


def vae_scale_latents(model: BladeModel, latents: torch.Tensor) -> torch.Tensor:
    """Model-space latents -> the VAE's own scale [B, C, T, H, W], from the shipped VAE config of the variant."""
    from ..blade_ops.models.variants import VARIANTS
    from ..blade_ops.pipeline import to_vae_scale

    variant = model.bundle.variant if model.bundle.variant in VARIANTS else model.family.name
    return to_vae_scale(latents, variant)


def _set_compiled(model: BladeModel, compiled: bool) -> None:
    """Compile the blocks of every transformer of ``model`` for this run, or undo an earlier run's compile (the
    transformers are shared by every branch that samples the loaded model)."""
    from ..blade_ops.pipeline.compile import compile_transformer, uncompile_transformer

    for expert in model.bundle.experts:
        if compiled:
            compile_transformer(expert)
        else:
            uncompile_transformer(expert)


class BladeSamplerNode:
    """Sample video latents; Cancel in the UI stops within one step and leaves the model usable."""

    DESCRIPTION = (
        "Generates video latents. scheduler 'blade' with 8 steps and guidance 1.0 is what BLADE LoRAs are "
        "distilled for (Wan: UniPC flow shift 3; CogVideoX: DPM trailing); 'tdm' is the stochastic sampler of "
        "training; 'baseline' with 50 steps and guidance 5 (Wan) / 6 (CogVideoX) is the dense reference. Width and "
        "height must be multiples of 16 (Wan2.2 TI2V-5B: 32), frames 4k+1; a connected LATENT sets the size and "
        "batch instead. A two-expert model (Wan2.2 A14B) switches experts at its boundary timestep."
    )
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Video latents [B, C, T, H/s, W/s] (Wan2.1 and CogVideoX: 16 channels, s = 8; Wan2.2 TI2V-5B: "
                       "48, s = 16); decode with BLADE VAE Decode (or VAE Decode for Wan).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (BLADE_MODEL, {"tooltip": "From BLADE Model Loader, optionally through BLADE ASA / LoRA."}),
                "embeds": (BLADE_EMBEDS, {"tooltip": "From BLADE Text Encode or BLADE Conditioning To Embeds."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "step": 1, "control_after_generate": True,
                                 "tooltip": "Noise seed; the same seed gives the same video on any device."}),
                "steps": ("INT", {"default": 8, "min": 1, "max": 1000, "step": 1,
                                  "tooltip": "Sampling steps: 8 for BLADE, 50 for the baseline."}),
                "guidance": ("FLOAT", dict(GUIDANCE)),
                "scheduler": (SCHEDULERS, {"default": "blade",
                                           "tooltip": "blade: the 8-step schedule of BLADE LoRAs; tdm: stochastic "
                                           "TDM sampler; baseline: the family's stock 50-step solver."}),
                "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16,
                                  "tooltip": "Video width in pixels, a multiple of 16 (Wan 832, CogVideoX 720)."}),
                "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16,
                                   "tooltip": "Video height in pixels, a multiple of 16 (480 for both)."}),
                "frames": ("INT", {"default": 81, "min": 1, "max": 1025, "step": 4,
                                   "tooltip": "Number of frames: Wan 4k+1 (81), CogVideoX 8k+1 (49)."}),
                "dynamic_guidance": ("BOOLEAN", {"default": False,
                                                 "tooltip": "Ramp CFG over the steps as CogVideoX-5B's baseline "
                                                 "does; only matters with guidance above 1."}),
            },
            "optional": {
                "latent": ("LATENT", {"tooltip": "Optional empty video latent: takes its size and batch instead of "
                                      "width/height/frames (its content is not used: text-to-video)."}),
                "linear_precision": (list(LINEAR_PRECISIONS), {
                    "default": "as loaded",
                    "tooltip": "fp8_e4m3: the transformer blocks' attention projections and feed-forward layers run "
                    "as fp8 matrix products (weights per output channel, activations per token; a LoRA's own "
                    "branch stays as loaded), while this input says so. Needs fp8 tensor cores (RTX 40xx, H100 and "
                    "later); elsewhere it is an error. For ComfyUI's own Wan models use core's fp8 weights and "
                    "--fast fp8_matrix_mult instead."}),
                "compile": ("BOOLEAN", {"default": False,
                                        "tooltip": "torch.compile the transformer's blocks (ASA's attention stays "
                                        "eager with its own kernels). The first run at each size pays the "
                                        "compile; later runs of the same graph compile nothing, since the "
                                        "ASA and LoRA patches stay on while they do not change. Changing the "
                                        "ASA/LoRA settings, or another branch sampling the same loaded model with "
                                        "other patches, compiles again. Off: the blocks run eagerly."}),
            },
        }

    def sample(
        self,
        model: BladeModel,
        embeds,
        seed: int,
        steps: int = 8,
        guidance: float = 1.0,
        scheduler: str = "blade",
        width: int = 832,
        height: int = 480,
        frames: int = 81,
        dynamic_guidance: bool = False,
        latent: dict | None = None,
        linear_precision: str | None = None,  # None (an older workflow without this input): "as loaded"
        compile: bool | None = None,
    ) -> tuple[dict]:
        from ..blade_ops.models import on_device
        from ..blade_ops.pipeline import Guidance, latent_grid, sample_latents

        guidance = finite_float(guidance, "guidance", NODE_NAME, GUIDANCE)
        linear_precision = linear_precision or "as loaded"
        if linear_precision not in LINEAR_PRECISIONS:
            raise ValueError(f"{NODE_NAME}: linear_precision={linear_precision!r} is not one of "
                             f"{list(LINEAR_PRECISIONS)}.")
        fp8 = LINEAR_PRECISIONS[linear_precision]
        if fp8:
            from ..blade_ops.models.fp8_linear import check_fp8_device

            check_fp8_device(bridge.torch_device())
        family = model.family
        model.bundle.require("transformer")
        batch = embeds.cond.shape[0]
        if latent is not None:
            width, height, frames, batch = size_from_latent(latent, family)
        grid = latent_grid(family, frames=frames, height=height, width=width)
        embeds = _batched(embeds, batch)
        guide = Guidance(float(guidance), bool(dynamic_guidance))
        if guide.enabled and embeds.uncond is None:
            raise ValueError(
                f"guidance={guidance} needs a negative prompt: connect one to BLADE Conditioning To Embeds, or set "
                "guidance to 1.0."
            )
        progress: list[bridge.Progress] = []

        def on_step(info) -> None:
            if not progress:
                progress.append(bridge.Progress(info.total, "BLADE Sampler"))
            progress[0].update_absolute(info.step)
            bridge.check_interrupted()

        log.info("BLADE: %s, %dx%dx%d, %s scheduler, %d steps, guidance %g", model.describe(), frames, height, width,
                 scheduler, steps, guidance)
        bridge.check_interrupted()
        bridge.free_comfy_memory()
        what = f"sampling {frames}x{height}x{width} (batch {batch})"
        with bridge.oom_advice(what, OOM_ADVICE), ExitStack() as placed:
            for expert in model.bundle.experts:  # every transformer of the model (Wan2.2 A14B: both experts)
                placed.enter_context(on_device(expert, bridge.torch_device(), offload="model"))
            # ASA picks its kernel for the device the transformer is on (fp8 linears quantise there): patch after
            # moving
            with patched(model, fp8_linears=fp8):
                _set_compiled(model, bool(compile))  # after patching: the blocks compile with the patches on
                latents = sample_latents(model.bundle, embeds, grid=grid, sampler=scheduler, steps=steps,
                                         guidance=guide, seed=check_seed(int(seed)), callback=on_step)
        samples = vae_scale_latents(model, latents)
        # "samples" is the key every ComfyUI node reads; "blade" keeps the exact model-space latents for BLADE VAE
        # Decode, with the samples they were scaled to, so a node that later changes "samples" is noticed.
        out = {"samples": samples, "blade": {"family": model.family.name, "latents": latents, "samples": samples}}
        return (out,)


NODES = {"BladeSampler": (BladeSamplerNode, NODE_NAME)}
