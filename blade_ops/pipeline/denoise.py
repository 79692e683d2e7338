"""The denoising loop: batched classifier-free guidance, per-step callback and cancellation, ASA step index."""

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
    """CFG scale w (guided = uncond + w (cond - uncond)); ``dynamic`` ramps it as CogVideoX-5B does."""

    scale: float = 1.0
    dynamic: bool = False

    @property
    def enabled(self) -> bool:
        return self.scale > 1.0

    def scale_at(self, timestep: float, steps: int) -> float:
        """Scale at one step. The dynamic ramp is diffusers' use_dynamic_cfg formula verbatim in its maths, which
        feeds the timestep value (not the step index) into 1 + w (1 - cos(pi ((N - t) / N)^5)) / 2."""
        if not self.dynamic:
            return self.scale
        return 1 + self.scale * ((1 - math.cos(math.pi * ((steps - float(timestep)) / steps) ** 5.0)) / 2)


def _asa_handle(transformer: torch.nn.Module):
    """ASA's per-model handle when the attention package is part of this build and ASA is installed."""
    if importlib.util.find_spec(f"{__package__.rsplit('.', 1)[0]}.attention") is None:
        return None
    from .. import attention

    getter = getattr(attention, "get_asa_handle", None)
    return getter(transformer) if getter is not None else None


def _model_output(
    bundle: ModelBundle, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, kwargs: dict
) -> torch.Tensor:
    dtype = bundle.transformer.dtype
    out = bundle.transformer(
        hidden_states=x.to(dtype), timestep=t.expand(x.shape[0]), encoder_hidden_states=embeds, return_dict=False,
        **kwargs,
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

    With CFG the unconditional and conditional halves go through the transformer as one batch of 2B. Returns
    the final latents (float32, same shape).
    """
    bundle.require("transformer")
    if guidance.enabled and embeds.uncond is None:
        raise ValueError(f"guidance={guidance.scale} needs negative prompt embeddings; encode with guidance=True.")
    if embeds.cond.shape[0] != latents.shape[0]:
        raise ValueError(f"{embeds.cond.shape[0]} prompt embeddings for a batch of {latents.shape[0]} latents.")
    transformer = bundle.transformer
    device = next(transformer.parameters()).device
    latents = latents.to(device=device, dtype=torch.float32)
    text = torch.cat([embeds.uncond, embeds.cond]) if guidance.enabled else embeds.cond
    text = text.to(device=device, dtype=transformer.dtype)
    family_kwargs = bundle.family.transformer_kwargs(transformer, latents)  # e.g. CogVideoX's rotary tables
    asa = _asa_handle(transformer)
    timesteps = sampler.timesteps.to(device)
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        if asa is not None:
            asa.set_step(i)
        x = torch.cat([latents, latents]) if guidance.enabled else latents
        out = _model_output(bundle, x, t, text, family_kwargs)
        if guidance.enabled:
            uncond, cond = out.chunk(2)
            out = uncond + guidance.scale_at(t.item(), total) * (cond - uncond)
        latents = sampler.step(i, out, latents, generator).float()
        _check_latents(transformer, latents, i + 1, total, float(t))
        if callback is not None and callback(StepInfo(i + 1, total, float(t), latents)) is False:
            raise GenerationCancelled(i + 1, total)
    return latents
