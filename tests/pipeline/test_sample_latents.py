"""Contract of sample_latents(): the one noise + denoise path behind generate() and the BLADE Sampler node, so the
same seed gives the same latents from Python and from ComfyUI."""

from __future__ import annotations

import pytest
import torch

from blade_ops.models.tiny import tiny_video_size
from blade_ops.pipeline import (
    GenerationRequest,
    Guidance,
    denoise,
    generate,
    latent_grid,
    prepare_latents,
    sample_latents,
)
from blade_ops.sampling import make_sampler
from blade_ops.text import encode_prompts


@pytest.fixture(scope="module")
def embeds(tiny_bundle):
    return {f: encode_prompts(tiny_bundle(f), ["a red ball", "a cat"], "blurry") for f in ("wan", "cogvideox")}


def test_equals_the_steps_spelled_out(family, tiny_bundle, embeds):
    bundle = tiny_bundle(family)
    size = tiny_video_size(family)
    guidance = Guidance(4.0, dynamic=family == "cogvideox")
    ours = sample_latents(bundle, embeds[family], size=size, sampler="tdm", steps=3, guidance=guidance, seed=11)
    generator = torch.Generator("cpu").manual_seed(11)
    sampler = make_sampler("tdm", bundle.family, bundle.scheduler_config, steps=3)
    noise = prepare_latents(bundle.family, 2, latent_grid(bundle.family, **size), generator,
                            init_noise_sigma=sampler.init_noise_sigma)
    reference = denoise(bundle, embeds[family], noise, sampler, guidance, generator=generator)
    assert ours.device.type == "cpu" and torch.equal(ours, reference)
    grid = latent_grid(bundle.family, **size)
    by_grid = sample_latents(bundle, embeds[family], grid=grid, sampler=sampler, guidance=guidance, seed=11)
    assert torch.equal(by_grid, ours)


def test_generate_uses_it(family, tiny_bundle):
    bundle = tiny_bundle(family)
    size = tiny_video_size(family)
    request = GenerationRequest(prompt="a red ball", sampler="blade", steps=3, seed=4, **size)
    out = generate(bundle, request, device="cpu", output_latents_only=True)
    cond = encode_prompts(bundle, ["a red ball"], guidance=False)
    assert torch.equal(out.latents, sample_latents(bundle, cond, size=size, sampler="blade", steps=3, seed=4))


def test_size_or_grid_exactly_once(tiny_bundle, embeds):
    bundle = tiny_bundle("wan")
    with pytest.raises(ValueError, match="exactly one of size"):
        sample_latents(bundle, embeds["wan"], sampler="blade")
    with pytest.raises(ValueError, match="exactly one of size"):
        sample_latents(bundle, embeds["wan"], size=tiny_video_size("wan"), grid=(2, 8, 8))
    with pytest.raises(ValueError, match=r"grid=\(2, 8\)"):
        sample_latents(bundle, embeds["wan"], grid=(2, 8))
    with pytest.raises(ValueError, match=r"frames=6 must be 4k\+1"):
        sample_latents(bundle, embeds["wan"], size={"width": 64, "height": 64, "frames": 6})
