"""BLADE's 8-step schedule as SIGMAS for ComfyUI's samplers (SamplerCustomAdvanced), on core's own Wan models.

The released Wan BLADE LoRA was distilled for UniPC flow matching with shift 3.0 over 8 steps, no CFG (REFERENCE.md,
"Inference with a BLADE LoRA"). This node gives exactly the sigmas the pack's ``blade`` sampler visits (the same
diffusers scheduler computes them). With KSampler instead: ModelSamplingSD3 shift 3.0, scheduler "simple", 8 steps,
CFG 1.0; its sigmas differ from these by at most 0.0017 (timesteps by at most 1 of 1000). The solver is a separate
choice: ComfyUI's uni_pc_bh2 is a third-order UniPC, the pack's (and the distillation's) second order, which
BLADE UniPC provides as a SAMPLER.
"""

from __future__ import annotations

from .inputs import float_inputs
from .types import CATEGORY

NODE_NAME = "BLADE Schedule (sigmas)"


class BladeSchedule:
    """The sigmas of BLADE's 8-step Wan schedule (or another step count / shift)."""

    DESCRIPTION = (
        "Sigmas of the schedule the BLADE Wan LoRA was distilled for: UniPC flow matching, shift 3.0, 8 steps "
        "(timesteps 999, 954, 900, 833, 750, 643, 500, 301). Connect to SamplerCustomAdvanced's sigmas with "
        "CFGGuider at cfg 1.0 (or BasicGuider) and BLADE UniPC (or KSamplerSelect uni_pc_bh2)."
    )
    CATEGORY = CATEGORY
    FUNCTION = "sigmas"
    RETURN_TYPES = ("SIGMAS",)
    RETURN_NAMES = ("sigmas",)
    OUTPUT_TOOLTIPS = ("steps + 1 sigmas ending in 0, for SamplerCustomAdvanced.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "steps": ("INT", {"default": 8, "min": 1, "max": 1000, "step": 1,
                                  "tooltip": "Sampling steps; BLADE LoRAs were distilled for 8."}),
                "shift": ("FLOAT", {"default": 3.0, "min": 0.01, "max": 100.0, "step": 0.01,
                                    "tooltip": "Flow shift of the schedule; BLADE's Wan LoRA uses 3.0."}),
            }
        }

    def sigmas(self, steps: int = 8, shift: float = 3.0):
        from ..blade_ops.families import WAN
        from ..blade_ops.sampling import flow_sigmas

        shift = float_inputs(BladeSchedule, NODE_NAME, shift=shift)["shift"]
        return (flow_sigmas("blade", WAN, steps=int(steps), shift=shift),)


class BladeUniPCSampler:
    """The pack's own UniPC solver as a SAMPLER for SamplerCustomAdvanced (what the BLADE LoRA was distilled for)."""

    DESCRIPTION = (
        "The solver of the pack's blade sampler (UniPC bh2, second order, diffusers' implementation) for "
        "SamplerCustomAdvanced. ComfyUI's uni_pc_bh2 is third order: with the BLADE schedule it lands a few percent "
        "away from what the BLADE LoRA was distilled for; this one steps exactly as the pack's own sampler."
    )
    CATEGORY = CATEGORY
    FUNCTION = "sampler"
    RETURN_TYPES = ("SAMPLER",)
    RETURN_NAMES = ("sampler",)
    OUTPUT_TOOLTIPS = ("For SamplerCustomAdvanced, with BLADE Schedule's sigmas.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {}}

    def sampler(self):
        import comfy.samplers

        return (comfy.samplers.KSAMPLER(sample_blade_unipc),)


def sample_blade_unipc(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """k-diffusion-style sampler function (ComfyUI's KSAMPLER calls it): ``model(x, sigma)`` gives x0.

    The model is called at sigma = t / 1000 for the pack's integer timestep t and its x0 turned back into the
    flow velocity at that sigma, so the network sees exactly what the pack's own sampler shows it.
    """
    from ..blade_ops.sampling import flow_unipc_sample

    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    x0_last = {}

    def velocity(sample, t):
        sigma = (t / 1000.0).to(sample.device, sample.dtype)
        x0 = model(sample, sigma * s_in, **extra_args)
        x0_last["x0"] = x0
        return (sample - x0) / sigma

    def on_step(i, sample):
        if callback is not None:
            callback({"x": sample, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": x0_last["x0"]})

    return flow_unipc_sample(velocity, x, sigmas, on_step=on_step)


NODES = {
    "BladeSchedule": (BladeSchedule, NODE_NAME),
    "BladeUniPCSampler": (BladeUniPCSampler, "BLADE UniPC (sampler)"),
}
