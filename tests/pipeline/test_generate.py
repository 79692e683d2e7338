"""Contract of generate(): any valid size, seeded repeatability, batching, cancellation that leaves the model
usable, clear errors for bad requests, and the preset switch."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from blade_ops.models.tiny import tiny_video_size
from blade_ops.pipeline import (
    GenerationCancelled,
    GenerationRequest,
    generate,
    prepare_model,
    preset_request,
)
from blade_ops.pipeline.decode import decode


def _request(family, **kw):
    fields = dict(prompt="a red ball bouncing", sampler="blade", steps=3, seed=5, **tiny_video_size(family))
    fields.update(kw)
    return GenerationRequest(**fields)


def test_frames_shape_range_and_repeatability(family, tiny_bundle):
    bundle = tiny_bundle(family)
    a = generate(bundle, _request(family), device="cpu")
    b = generate(bundle, _request(family), device="cpu")
    c = generate(bundle, _request(family, seed=6), device="cpu")
    size = tiny_video_size(family)
    assert a.frames.shape == (1, size["frames"], size["height"], size["width"], 3)
    assert a.frames.dtype == torch.float32 and 0 <= a.frames.min() and a.frames.max() <= 1
    assert torch.equal(a.latents, b.latents) and torch.equal(a.frames, b.frames)
    assert not torch.equal(a.latents, c.latents)
    assert a.fps == bundle.family.fps and len(a.timesteps) == 3
    assert set(a.timings) == {"text_encoding", "denoising", "vae_decode"}


@pytest.mark.parametrize("sampler, guidance", [("tdm", 1.0), ("baseline", 4.0)])
def test_other_sizes_samplers_and_cfg_batches(family, tiny_bundle, sampler, guidance):
    size = {"width": 96, "height": 48, "frames": 9 if family == "wan" else 17}
    request = _request(family, prompt=["a cat", "a dog"], sampler=sampler, guidance=guidance, steps=2, **size)
    out = generate(tiny_bundle(family), request, device="cpu")
    assert out.frames.shape == (2, size["frames"], 48, 96, 3)
    assert torch.isfinite(out.latents).all()


def test_cancel_mid_run_then_model_still_works(family, tiny_bundle):
    bundle = tiny_bundle(family)
    seen = []

    def stop_after_two(info):
        seen.append((info.step, info.total, info.timestep))
        return info.step < 2

    with pytest.raises(GenerationCancelled, match="after step 2 of 3"):
        generate(bundle, _request(family), callback=stop_after_two, device="cpu")
    assert [s[:2] for s in seen] == [(1, 3), (2, 3)]
    fresh = generate(bundle, _request(family), device="cpu")
    assert torch.equal(fresh.latents, generate(bundle, _request(family), device="cpu").latents)


def test_callback_may_raise_to_cancel(tiny_bundle):
    def boom(info):
        raise GenerationCancelled(info.step, info.total)

    with pytest.raises(GenerationCancelled):
        generate(tiny_bundle("wan"), _request("wan"), callback=boom, device="cpu")


def test_invalid_size_lists_valid_values(tiny_bundle):
    with pytest.raises(ValueError, match=r"frames=6 must be 4k\+1.*nearest valid: \[5, 9\]"):
        generate(tiny_bundle("wan"), _request("wan", frames=6), device="cpu")
    with pytest.raises(ValueError, match=r"width=100 must be a positive multiple of 16 \(nearest valid: \[96, 112\]"):
        generate(tiny_bundle("wan"), _request("wan", width=100), device="cpu")


def test_cogvideox_even_latent_frames_are_refused(tiny_bundle):
    message = r"frames=13 must be 8k\+1.*nearest valid: \[9, 17\]"
    with pytest.raises(ValueError, match=message):
        generate(tiny_bundle("cogvideox"), _request("cogvideox", frames=13), device="cpu")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt": ""}, "The prompt is empty"),
        ({"prompt": ["a", "  "]}, "Prompt 2 of 2 is empty"),
        ({"prompt": []}, "prompt=\\[\\] must be a string"),
        ({"sampler": "euler"}, "valid samplers: baseline, blade, tdm"),
        ({"steps": 0}, "steps=0 must be a positive integer"),
        ({"seed": -1}, "seed=-1"),
        ({"seed": 2**64}, r"seed=18446744073709551616 must be an integer in \[0, 2\*\*64 - 1"),
        ({"guidance": -2.0}, "guidance=-2.0"),
        ({"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"]}, "negative_prompt has 3 entries"),
        ({"eta": 2.0}, "eta=2.0"),
    ],
)
def test_request_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GenerationRequest(**{"prompt": "x", **kwargs})


def test_preset_requests():
    from blade_ops.families import COGVIDEOX, WAN

    base = preset_request("baseline", COGVIDEOX, "a cat")
    assert (base.sampler, base.guidance, base.dynamic_guidance) == ("baseline", 6.0, True)
    blade = preset_request("blade", WAN, "a cat", steps=6)
    assert (blade.sampler, blade.guidance, blade.steps) == ("blade", 1.0, 6)
    with pytest.raises(ValueError, match="valid presets: blade, baseline"):
        preset_request("fast", WAN, "a cat")


def test_blade_preset_takes_asa_settings_from_the_lora_metadata():
    """The shipped toy LoRA records the ASA settings it was distilled with (16-token blocks); the preset uses them."""
    from blade_ops.attention import get_asa_handle
    from blade_ops.models import load_model_bundle

    assets = Path(__file__).resolve().parents[2] / "training" / "toy" / "assets"
    bundle = load_model_bundle(assets / "toy-wan", parts=("transformer",), dtype=torch.float32)
    prepare_model(bundle, "blade", lora=assets / "toy_blade_lora.safetensors")
    config = get_asa_handle(bundle.transformer).config
    assert (config.block_size, config.num_keep) == (16, 8)


def test_blade_preset_installs_asa_steps_it_and_applies_lora(tiny_folder, monkeypatch):
    """A fresh bundle (ASA changes the transformer): ASA goes in first, the LoRA second, set_step once per step."""
    import blade_ops.lora
    from blade_ops.attention import get_asa_handle
    from blade_ops.models import load_model_bundle

    bundle = load_model_bundle(tiny_folder("wan"), dtype=torch.float32)
    order = []
    monkeypatch.setattr(blade_ops.lora, "read_lora", lambda path: SimpleNamespace(info=SimpleNamespace(asa=None)))
    monkeypatch.setattr(
        blade_ops.lora, "apply_lora",
        lambda transformer, path, strength, merge=False: order.append(
            ("lora", get_asa_handle(transformer) is not None, strength)
        ),
    )
    prepare_model(bundle, "blade", lora="blade.safetensors", lora_strength=0.8)
    assert order == [("lora", True, 0.8)]
    handle = get_asa_handle(bundle.transformer)
    steps = []
    monkeypatch.setattr(handle, "set_step", steps.append)
    request = preset_request("blade", bundle.family, "a cat", steps=4, **tiny_video_size("wan"))
    out = generate(bundle, request, device="cpu")
    assert steps == [0, 1, 2, 3] and out.frames.shape == (1, 5, 64, 64, 3)


def test_decode_tiling_flag_is_restored(tiny_bundle):
    bundle = tiny_bundle("wan")
    latents = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = decode(bundle, latents)
    tiled = decode(bundle, latents, tiled=True, sliced=True)
    assert not bundle.vae.use_tiling and not bundle.vae.use_slicing
    assert plain.shape == tiled.shape == (1, 5, 64, 64, 3)
