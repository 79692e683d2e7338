"""Contract: the shipped toy teacher and its distilled BLADE LoRA load through the pack's loaders and make a toy
video in 8 sparse steps without CFG through blade_ops' pipeline pieces, on the CPU, in seconds."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from blade_ops.attention import ASAConfig, install_asa
from blade_ops.families import WAN
from blade_ops.lora import apply_lora, read_lora
from blade_ops.pipeline.decode import decode
from blade_ops.pipeline.denoise import Guidance, denoise
from blade_ops.pipeline.latents import prepare_latents
from blade_ops.sampling import make_sampler
from blade_ops.text import encode_prompts
from training.toy.model import load_toy_bundle
from training.toy.run_all import toy_asa

ASSETS = Path(__file__).resolve().parents[2] / "training" / "toy" / "assets"


def _sample(bundle, spec, prompt: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    latents = prepare_latents(WAN, 1, (spec.frames, spec.size, spec.size), generator)
    embeds = encode_prompts(bundle, [prompt], guidance=False)
    sampler = make_sampler("blade", WAN, bundle.scheduler_config, steps=8)
    return denoise(bundle, embeds, latents, sampler, Guidance(1.0), generator=generator)


def test_shipped_toy_model_makes_a_video_in_8_sparse_steps():
    lora = read_lora(ASSETS / "toy_blade_lora.safetensors")
    assert lora.info.steps == 8 and lora.info.asa["block_size"] == 16 and lora.info.base_model

    bundle, spec = load_toy_bundle(ASSETS / "toy-wan")
    teacher_latents = _sample(bundle, spec, "a red circle moving right")
    install_asa(bundle.transformer, ASAConfig.for_family("wan", **toy_asa(spec)), "torch")
    apply_lora(bundle.transformer, ASSETS / "toy_blade_lora.safetensors")
    start = time.perf_counter()
    latents = _sample(bundle, spec, "a red circle moving right")
    frames = decode(bundle, latents)[0]  # [F, H, W, C] in [0, 1]
    seconds = time.perf_counter() - start

    assert frames.shape == (17, 128, 128, 3) and seconds < 30
    assert not torch.allclose(latents, teacher_latents)
    red = frames[..., 0] > 0.5
    assert red.any() and (frames[..., 1][red] < 0.5).float().mean() > 0.8  # the student draws a red shape
