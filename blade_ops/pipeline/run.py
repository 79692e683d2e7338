"""text -> latents -> frames: the stages composed for one request, each part on the device only while it runs."""

from __future__ import annotations

import logging
import time

import torch

from ..families import check_video_size
from ..models.bundle import ModelBundle
from ..models.placement import on_device, resolve_device
from ..sampling import make_sampler
from ..text import encode_prompts
from .decode import decode
from .denoise import Guidance, StepCallback
from .request import GenerationRequest, GenerationResult
from .sample import sample_latents

logger = logging.getLogger(__name__)


def generate(
    bundle: ModelBundle,
    request: GenerationRequest,
    *,
    callback: StepCallback | None = None,
    device: torch.device | str | None = None,
    output_latents_only: bool = False,
) -> GenerationResult:
    """Run ``request`` on ``bundle``. The seed drives a CPU generator, so results repeat across devices.

    ``device`` defaults to the bundle's (else CUDA when available). Each part is moved there for its stage; with
    ``request.offload`` (or the bundle's offload policy "model") it goes back to the CPU right after, so only one
    large part is on the GPU at a time.

    ``callback`` gets a StepInfo after each step; returning False raises GenerationCancelled (models stay usable).
    """
    family = bundle.family
    size = request.size(family)
    check_video_size(family, **size)
    bundle.require("transformer", "text_encoder", "tokenizer", *(() if output_latents_only else ("vae",)))
    device = resolve_device(device if device is not None else getattr(bundle, "device", None))
    offload = "model" if request.offload else getattr(bundle, "offload", "none")
    sampler = make_sampler(
        request.sampler, family, bundle.scheduler_config, steps=request.steps, shift=request.shift, eta=request.eta
    )
    scale_2 = float(request.guidance_2) if request.guidance_2 is not None else None
    guidance = Guidance(float(request.guidance), request.dynamic_guidance, scale_2)
    negative = request.negative_prompt
    if negative is None:
        negative = family.default_negative_prompt
    timings: dict[str, float] = {}
    logger.info("Sampling %s at %s with %s, CFG %s", family.name, size, sampler.describe(), guidance)

    start = time.perf_counter()
    with on_device(bundle.text_encoder, device, offload=offload, stream=True):
        embeds = encode_prompts(
            bundle, request.prompts, negative, guidance=guidance.enabled, max_length=request.max_sequence_length
        )
    timings["text_encoding"] = time.perf_counter() - start

    start = time.perf_counter()
    latents = sample_latents(
        bundle, embeds, size=size, sampler=sampler, guidance=guidance, seed=request.seed, callback=callback,
        device=device, offload=offload,
    )
    timings["denoising"] = time.perf_counter() - start

    frames = None
    if not output_latents_only:
        start = time.perf_counter()
        with on_device(bundle.vae, device, offload=offload):
            chunk = request.vae_chunk_frames
            if chunk is None and offload != "none":
                chunk = 1  # offloading is asked for to save memory: the frame-by-frame decode needs the least
            frames = decode(
                bundle, latents, tiled=request.vae_tiling, sliced=request.vae_slicing, chunk_frames=chunk
            )
        timings["vae_decode"] = time.perf_counter() - start
    return GenerationResult(
        frames=frames,
        latents=latents,
        fps=request.fps or family.fps,
        seed=request.seed,
        timesteps=[float(t) for t in sampler.timesteps],
        timings=timings,
    )
