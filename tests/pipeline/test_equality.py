"""Contract: on the same tiny model, prompts and seed, our embeddings and final latents equal those of diffusers'
own WanPipeline / CogVideoXPipeline (float32, max abs diff <= 1e-5), with CFG, for the baseline samplers."""

from __future__ import annotations

import pytest
import torch

from blade_ops.models.tiny import tiny_video_size
from blade_ops.pipeline import PRESETS, Guidance, denoise, latent_grid, prepare_latents
from blade_ops.sampling import make_sampler
from blade_ops.text import encode_prompts, text_sequence_length

PROMPTS = ["a red ball   bouncing &amp; rolling", "a cat on a street at night"]
NEGATIVE = "blurry low quality static"
STEPS = 6  # the 50-step defaults are checked in tests/sampling; six steps exercise the solver history


def _diffusers_pipe(family, folder):
    from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline, WanPipeline

    if family == "wan":
        return WanPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe = CogVideoXPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config)
    return pipe


@pytest.fixture(scope="module")
def pipes(tiny_folder):
    return {f: _diffusers_pipe(f, tiny_folder(f)) for f in ("wan", "cogvideox")}


def test_prompt_embeddings_equal_diffusers(family, tiny_bundle, pipes):
    bundle = tiny_bundle(family)
    ours = encode_prompts(bundle, PROMPTS, NEGATIVE)
    theirs = pipes[family].encode_prompt(
        PROMPTS, NEGATIVE, True, max_sequence_length=text_sequence_length(bundle), device="cpu"
    )
    assert ours.cond.shape == theirs[0].shape
    assert (ours.cond - theirs[0]).abs().max() <= 1e-5
    assert (ours.uncond - theirs[1]).abs().max() <= 1e-5
    if family == "wan":  # padding after the true length is exactly zero
        assert ours.cond.shape[1] == 512 and torch.all(ours.cond[:, 20:] == 0)


def test_text_length_conventions(tiny_bundle):
    assert text_sequence_length(tiny_bundle("wan")) == 512
    # CogVideoX takes its transformer's max_text_seq_length (226 for the real model, 16 for the tiny one)
    cog = tiny_bundle("cogvideox")
    assert text_sequence_length(cog) == cog.transformer.config.max_text_seq_length


def test_final_latents_equal_diffusers(family, tiny_bundle, pipes):
    bundle = tiny_bundle(family)
    size = tiny_video_size(family)
    preset = PRESETS["baseline"]
    guidance = Guidance(preset.guidance(bundle.family), preset.dynamic_guidance(bundle.family))
    embeds = encode_prompts(bundle, PROMPTS, NEGATIVE)
    extra = {"use_dynamic_cfg": guidance.dynamic} if family == "cogvideox" else {}
    reference = pipes[family](
        prompt_embeds=embeds.cond, negative_prompt_embeds=embeds.uncond, num_inference_steps=STEPS,
        guidance_scale=guidance.scale, generator=torch.Generator().manual_seed(7), output_type="latent",
        height=size["height"], width=size["width"], num_frames=size["frames"], **extra,
    ).frames

    generator = torch.Generator().manual_seed(7)
    sampler = make_sampler("baseline", bundle.family, bundle.scheduler_config, steps=STEPS)
    noise = prepare_latents(bundle.family, len(PROMPTS), latent_grid(bundle.family, **size), generator)
    ours = denoise(bundle, embeds, noise, sampler, guidance, generator=generator)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max() <= 1e-5
