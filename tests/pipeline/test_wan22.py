"""Contract: Wan2.2 TI2V-5B (48-channel Wan2.2 VAE, one timestep per video token) and T2V-A14B (two experts switched
at t = 875) run through the pack exactly as diffusers' WanPipeline runs them: same embeddings, same seed, baseline
sampler with CFG, float32 final latents within 1e-5; the A14B run visits both experts, each with its own CFG scale.
The whole BLADE path with every attention block kept equals the dense path with the same LoRAs; sparse differs."""

from __future__ import annotations

import pytest
import torch

from blade_ops.families import WAN22_A14B, WAN22_TI2V
from blade_ops.lora import apply_lora
from blade_ops.models import load_model_bundle
from blade_ops.models.tiny import tiny_video_size
from blade_ops.pipeline import (
    PRESETS,
    Guidance,
    denoise,
    generate,
    latent_grid,
    prepare_latents,
    prepare_model,
    preset_request,
)
from blade_ops.sampling import make_sampler
from blade_ops.text import encode_prompts
from tests.common import ALL_KEPT, SPARSE, attention_lora

TI2V, A14B = WAN22_TI2V.name, WAN22_A14B.name
PROMPTS = ["a red ball bouncing", "a cat on a street at night"]
NEGATIVE = "blurry low quality static"
STEPS = 4  # A14B's shift 12 puts 999, 973, 923 above the boundary and 800 below it


def _count_calls(modules: list[torch.nn.Module], timesteps: list | None = None) -> tuple[list[int], list]:
    """Calls per module (and the shape of each call's ``timestep`` into ``timesteps``), with the hooks to remove."""
    counts = [0] * len(modules)

    def counter(i):
        def hook(module, args, kwargs):
            counts[i] += 1
            if timesteps is not None:
                timesteps.append(tuple(kwargs["timestep"].shape))

        return hook

    return counts, [m.register_forward_pre_hook(counter(i), with_kwargs=True) for i, m in enumerate(modules)]


def test_folders_are_recognised(tiny_bundle):
    ti2v, a14b = tiny_bundle(TI2V), tiny_bundle(A14B)
    assert ti2v.family is WAN22_TI2V and ti2v.transformer_2 is None
    assert ti2v.vae.config.z_dim == 48 and ti2v.vae.config.scale_factor_spatial == 16
    assert a14b.family is WAN22_A14B and a14b.transformer_2 is not None
    assert a14b.transformer_2 is not a14b.transformer
    assert not torch.equal(a14b.transformer.proj_out.weight, a14b.transformer_2.proj_out.weight)
    assert [WAN22_A14B.expert_at(t) for t in (999, 875, 874.9, 0)] == [0, 0, 1, 1]


@pytest.mark.parametrize("family", [TI2V, A14B])
def test_dense_latents_equal_diffusers(family, tiny_bundle, tiny_folder):
    from diffusers import WanPipeline

    bundle = tiny_bundle(family)
    fam = bundle.family
    pipe = WanPipeline.from_pretrained(tiny_folder(family), torch_dtype=torch.float32)
    assert pipe.config.expand_timesteps == (fam is WAN22_TI2V)
    assert pipe.config.boundary_ratio == (WAN22_A14B.boundary_ratio if fam is WAN22_A14B else None)
    size = tiny_video_size(family)
    preset = PRESETS["baseline"]
    guidance = Guidance(preset.guidance(fam), scale_2=preset.guidance_2(fam))
    assert (guidance.scale, guidance.scale_2) == ((4.0, 3.0) if fam is WAN22_A14B else (5.0, None))
    embeds = encode_prompts(bundle, PROMPTS, NEGATIVE)
    extra = {"guidance_scale_2": guidance.scale_2} if guidance.scale_2 is not None else {}
    theirs_calls, hooks = _count_calls([m for m in (pipe.transformer, pipe.transformer_2) if m is not None])
    reference = pipe(
        prompt_embeds=embeds.cond, negative_prompt_embeds=embeds.uncond, num_inference_steps=STEPS,
        guidance_scale=guidance.scale, generator=torch.Generator().manual_seed(7), output_type="latent",
        height=size["height"], width=size["width"], num_frames=size["frames"], **extra,
    ).frames
    for hook in hooks:
        hook.remove()

    generator = torch.Generator().manual_seed(7)
    sampler = make_sampler("baseline", fam, bundle.scheduler_config, steps=STEPS)
    channels = fam.latent_channels_of(bundle.transformer)
    noise = prepare_latents(fam, len(PROMPTS), latent_grid(fam, **size), generator, channels=channels)
    shapes: list = []
    ours_calls, hooks = _count_calls(bundle.experts, shapes)
    ours = denoise(bundle, embeds, noise, sampler, guidance, generator=generator)
    for hook in hooks:
        hook.remove()
    assert ours.shape == reference.shape and ours.shape[1] == fam.latent_channels
    assert (ours - reference).abs().max() <= 1e-5
    t, h, w = latent_grid(fam, **size)
    tokens = t * (h // 2) * (w // 2)  # TI2V: one timestep per video token (CFG batch of 2 x 2 prompts)
    assert set(shapes) == ({(4, tokens)} if fam is WAN22_TI2V else {(4,)})
    if fam is WAN22_A14B:  # both experts ran: 3 steps high-noise, 1 low-noise (diffusers: 2 calls a step)
        assert ours_calls == [3, 1] and theirs_calls == [6, 2]


@pytest.mark.parametrize("family", [TI2V, A14B])
def test_blade_with_every_block_kept_equals_dense(family, tiny_folder, tmp_path):
    """ASA on every expert, one LoRA per expert: all blocks kept gives the dense latents, sparse does not."""
    first = load_model_bundle(tiny_folder(family), parts=("transformer",))
    loras = {name: attention_lora(getattr(first, name), tmp_path / name, seed=i)
             for i, name in enumerate(first.family.expert_names)}

    def latents(asa) -> torch.Tensor:
        bundle = load_model_bundle(tiny_folder(family), dtype=torch.float32)
        if asa is None:
            for name, path in loras.items():
                apply_lora(getattr(bundle, name), path)
        else:
            others = {name: (path, 1.0) for name, path in loras.items() if name != "transformer"}
            prepare_model(bundle, "blade", lora=loras["transformer"], asa_config=asa, backend="torch",
                          expert_loras=others)
        request = preset_request("blade", bundle.family, PROMPTS, seed=3, **tiny_video_size(family))
        return generate(bundle, request, device="cpu", output_latents_only=True).latents

    dense = latents(None)
    blade = latents(ALL_KEPT)
    assert torch.isfinite(blade).all()
    assert (blade - dense).abs().max().item() <= 1e-5
    assert (latents(SPARSE) - dense).abs().max().item() > 1e-3


def test_ti2v_decodes_through_the_wan22_vae(tiny_bundle):
    """48-channel latents decode to RGB at 16x the latent size; the chunked decode equals diffusers' own."""
    from blade_ops.pipeline import decode
    from blade_ops.pipeline.scaling import to_vae_scale

    bundle = tiny_bundle(TI2V)
    latents = torch.randn(1, 48, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    frames = decode(bundle, latents)
    assert frames.shape == (1, 5, 128, 128, 3)
    with torch.no_grad():
        direct = bundle.vae.decode(to_vae_scale(latents, bundle.vae.config)).sample
    assert (frames - (direct.permute(0, 2, 3, 4, 1) / 2 + 0.5).clamp(0, 1)).abs().max() <= 1e-5
