"""The denoising loop: batched classifier-free guidance, per-step callback and cancellation, ASA step index.

The family adapter says which of its transformers (experts) denoises each timestep (Wan2.2 A14B: the high-noise
expert above its boundary, the low-noise one below) and what the transformer is told as ``timestep`` (one value per
sample, or one per video token for Wan2.2 TI2V-5B).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..finite import count_nonfinite, is_finite
from ..models.bundle import ModelBundle
from ..sampling import Sampler
from ..text import PromptEmbeds
from .request import GenerationCancelled, StepInfo

logger = logging.getLogger(__name__)

StepCallback = Callable[[StepInfo], bool | None]  # return False (or raise GenerationCancelled) to stop


@dataclass(frozen=True)
class Guidance:
    """CFG scale w (guided = uncond + w (cond - uncond)); ``dynamic`` ramps it as CogVideoX-5B does; ``scale_2`` is
    the scale of a family's second expert (diffusers' guidance_scale_2; None: ``scale`` for every expert)."""

    scale: float = 1.0
    dynamic: bool = False
    scale_2: float | None = None

    @property
    def enabled(self) -> bool:
        return self.scale > 1.0 or (self.scale_2 is not None and self.scale_2 > 1.0)

    def scale_at(self, timestep: float, steps: int, expert: int = 0) -> float:
        """Scale at one step of ``expert``. The dynamic ramp is diffusers' use_dynamic_cfg formula verbatim in its
        maths, which feeds the timestep value (not the step index) into 1 + w (1 - cos(pi ((N - t) / N)^5)) / 2."""
        scale = self.scale_2 if expert == 1 and self.scale_2 is not None else self.scale
        if not self.dynamic:
            return scale
        return 1 + scale * ((1 - math.cos(math.pi * ((steps - float(timestep)) / steps) ** 5.0)) / 2)


def _asa_handle(transformer: torch.nn.Module):
    """ASA's per-model handle when the attention package is part of this build and ASA is installed."""
    if importlib.util.find_spec(f"{__package__.rsplit('.', 1)[0]}.attention") is None:
        return None
    from .. import attention

    getter = getattr(attention, "get_asa_handle", None)
    return getter(transformer) if getter is not None else None


def _model_output(
    family, transformer: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, kwargs: dict
) -> torch.Tensor:
    out = transformer(
        hidden_states=x.to(transformer.dtype), timestep=family.timestep_input(transformer, t, x),
        encoder_hidden_states=embeds, return_dict=False, **kwargs,
    )[0]
    return out.float()


class NonFiniteLatentsError(RuntimeError):
    """The latents turned NaN or Inf during sampling: the run stops instead of decoding a black video."""

    def __init__(self, message: str, step: int, total: int):
        super().__init__(message)
        self.step, self.total = step, total


def _likely_causes(transformer: torch.nn.Module) -> str:
    from ..lora import applied_loras

    causes = []
    loras = [e for e in applied_loras(transformer).values() if e.enabled]
    if loras:
        listed = ", ".join(f"{e.name!r} at {e.strength:g}" for e in loras)
        causes.append(f"a LoRA strength far from 1 (applied: {listed})")
    else:
        causes.append("a LoRA strength far from 1 (none is applied here)")
    if transformer.dtype == torch.float16:
        causes.append("fp16 overflow (the model runs in float16: load it in bf16 or fp32)")
    else:
        causes.append(f"fp16 overflow (not the case here: the model runs in {str(transformer.dtype).split('.')[-1]})")
    causes.append("damaged weights (re-download the model and LoRA files)")
    return "; ".join(causes)


def _check_latents(transformer: torch.nn.Module, latents: torch.Tensor, step: int, total: int, t: float) -> None:
    """Stop the run at the first step whose latents hold NaN or Inf (a min/max over the latents: one device sync
    per step, negligible next to a transformer pass)."""
    if is_finite(latents):
        return
    bad = count_nonfinite("latents", latents)
    raise NonFiniteLatentsError(
        f"Sampling produced non-finite latents at step {step} of {total} (timestep {t:g}): {bad.nan} NaN and "
        f"{bad.inf} Inf of {bad.numel} values, so the video would be black. Likely causes: "
        f"{_likely_causes(transformer)}.",
        step,
        total,
    )


@torch.no_grad()
def denoise(
    bundle: ModelBundle,
    embeds: PromptEmbeds,
    latents: torch.Tensor,
    sampler: Sampler,
    guidance: Guidance = Guidance(),
    callback: StepCallback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run every step of ``sampler`` from noise ``latents`` (family layout, float32) on the transformer's device.

    With CFG the unconditional and conditional halves go through the transformer as one batch of 2B. A family with
    several experts runs the one its adapter picks for each timestep. Returns the final latents (float32, same
    shape).
    """
    bundle.require("transformer")
    if guidance.enabled and embeds.uncond is None:
        raise ValueError(f"guidance={guidance.scale} needs negative prompt embeddings; encode with guidance=True.")
    if embeds.cond.shape[0] != latents.shape[0]:
        raise ValueError(f"{embeds.cond.shape[0]} prompt embeddings for a batch of {latents.shape[0]} latents.")
    family, experts = bundle.family, bundle.experts
    device = next(experts[0].parameters()).device
    latents = latents.to(device=device, dtype=torch.float32)
    text = torch.cat([embeds.uncond, embeds.cond]) if guidance.enabled else embeds.cond
    text = text.to(device=device, dtype=experts[0].dtype)
    family_kwargs = [family.transformer_kwargs(e, latents) for e in experts]  # e.g. CogVideoX's rotary tables
    handles = [h for h in (_asa_handle(e) for e in experts) if h is not None]
    num_train_timesteps = int((bundle.scheduler_config or {}).get("num_train_timesteps", 1000))
    timesteps = sampler.timesteps.to(device)
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        for asa in handles:
            asa.set_step(i)
        e = family.expert_at(float(t), num_train_timesteps)
        x = torch.cat([latents, latents]) if guidance.enabled else latents
        out = _model_output(family, experts[e], x, t, text, family_kwargs[e])
        if guidance.enabled:
            uncond, cond = out.chunk(2)
            out = uncond + guidance.scale_at(t.item(), total, e) * (cond - uncond)
        latents = sampler.step(i, out, latents, generator).float()
        _check_latents(experts[e], latents, i + 1, total, float(t))
        if callback is not None and callback(StepInfo(i + 1, total, float(t), latents)) is False:
            raise GenerationCancelled(i + 1, total)
    return latents
