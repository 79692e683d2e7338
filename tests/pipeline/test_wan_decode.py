"""Chunked Wan VAE decode equals diffusers' frame-by-frame decode, for chunk lengths that split the latent frames
evenly, unevenly and into a single-frame tail."""

import copy
import importlib

import pytest
import torch

from blade_ops.models.tiny import tiny_vae
from blade_ops.pipeline.wan_decode import (
    decode_wan_chunked,
    default_chunk_frames,
    is_chunkable,
    set_conv3d_layout,
)


def _vae(**overrides):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    config = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True])
    config.update(overrides)
    return AutoencoderKLWan(**config).eval()


@pytest.fixture(scope="module")
def vae_and_reference():
    vae = _vae()
    z = torch.randn(2, 16, 6, 3, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = vae.decode(z, return_dict=False)[0]
    return vae, z, reference


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8])
def test_chunked_decode_equals_frame_by_frame(vae_and_reference, chunk):
    vae, z, reference = vae_and_reference
    out = decode_wan_chunked(vae, z, chunk)
    assert out.shape == reference.shape == (2, 3, 21, 12, 20)
    assert torch.isfinite(out).all()
    assert reference.abs().max() > 1e-3  # the comparison is not between two near-zero outputs
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)


def test_chunked_decode_leaves_vae_reusable(vae_and_reference):
    vae, z, reference = vae_and_reference
    decode_wan_chunked(vae, z, 4)
    assert all(entry is None for entry in vae._feat_map)
    with torch.no_grad():
        again = vae.decode(z, return_dict=False)[0]
    torch.testing.assert_close(again, reference, rtol=0, atol=1e-6)


def test_pipeline_decode_uses_chunks_and_matches():
    from blade_ops.pipeline.decode import decode

    vae = tiny_vae("wan")
    assert is_chunkable(vae)

    class Bundle:
        family = type("F", (), {"name": "wan"})()

        def require(self, *_):
            return None

    bundle = Bundle()
    bundle.vae = vae
    latents = torch.randn(1, 16, 5, 4, 4, generator=torch.Generator().manual_seed(2))
    chunked = decode(bundle, latents, chunk_frames=3)
    single = decode(bundle, latents, chunk_frames=1)
    assert chunked.shape == single.shape == (1, 17, 32, 32, 3)
    torch.testing.assert_close(chunked, single, rtol=0, atol=1e-5)


def test_default_chunk_frames_shrinks_with_resolution():
    assert default_chunk_frames(60, 104) == 2  # 480x832
    assert default_chunk_frames(90, 160) == 1  # 720x1280
    assert default_chunk_frames(30, 52) == 8  # 240x416


def test_bad_inputs_are_refused(vae_and_reference):
    vae, z, _ = vae_and_reference
    with pytest.raises(ValueError, match="at least 1"):
        decode_wan_chunked(vae, z, 0)
    with pytest.raises(ValueError, match=r"\[B, C, T, H, W\]"):
        decode_wan_chunked(vae, z[0], 2)
    with pytest.raises(TypeError, match="AutoencoderKLWan"):
        decode_wan_chunked(torch.nn.Linear(2, 2), z, 2)


def test_pipeline_decode_routes_wan_through_chunks(monkeypatch):
    decode_module = importlib.import_module("blade_ops.pipeline.decode")

    calls = []
    real = decode_module.decode_wan_chunked

    def spy(vae, z, chunk_frames=None):
        calls.append(chunk_frames)
        return real(vae, z, chunk_frames)

    monkeypatch.setattr(decode_module, "decode_wan_chunked", spy)
    bundle = type("Bundle", (), {"family": type("F", (), {"name": "wan"})(), "require": lambda self, *p: None})()
    bundle.vae = tiny_vae("wan")
    latents = torch.randn(2, 16, 5, 4, 4)
    decode_module.decode(bundle, latents, chunk_frames=2, sliced=True)
    assert calls == [2, 2]  # one call per video of the sliced batch
    decode_module.decode(bundle, latents, chunk_frames=1)
    assert calls == [2, 2]  # chunk 1 is diffusers' own loop


def test_channels_last_layout_gives_the_same_frames(vae_and_reference):
    from blade_ops.pipeline.wan_decode import set_conv3d_layout

    vae, z, reference = vae_and_reference
    try:
        out = decode_wan_chunked(vae, z, 3, channels_last=True)
        conv = next(m for m in vae.modules() if isinstance(m, torch.nn.Conv3d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)
    finally:
        set_conv3d_layout(vae, False)
    assert conv.weight.is_contiguous()


@pytest.mark.parametrize(
    ("offload", "asked", "expected"), [(False, None, None), (True, None, 1), (True, 3, 3), (False, 2, 2)]
)
def test_generate_picks_the_chunk_length(monkeypatch, offload, asked, expected):
    """Offloading asks for the least memory, so its decode goes frame by frame unless told otherwise."""
    from blade_ops.families import get_family
    from blade_ops.models.bundle import ModelBundle
    from blade_ops.models.tiny import tiny_components
    from blade_ops.pipeline import GenerationRequest, generate

    run_module = importlib.import_module("blade_ops.pipeline.run")
    seen = []
    real = run_module.decode

    def spy(bundle, latents, **kwargs):
        seen.append(kwargs["chunk_frames"])
        return real(bundle, latents, **kwargs)

    monkeypatch.setattr(run_module, "decode", spy)
    parts = tiny_components("wan")
    scheduler = parts.pop("scheduler")
    bundle = ModelBundle(family=get_family("wan"), scheduler_config=dict(scheduler.config), **parts)
    request = GenerationRequest(
        prompt="a red circle", width=32, height=32, frames=5, steps=1, offload=offload, vae_chunk_frames=asked
    )
    result = generate(bundle, request, device="cpu")
    assert seen == [expected]
    assert result.frames.shape == (1, 5, 32, 32, 3)


def test_request_refuses_a_bad_chunk_length():
    from blade_ops.pipeline import GenerationRequest

    with pytest.raises(ValueError, match="vae_chunk_frames=0 must be a positive integer"):
        GenerationRequest(prompt="x", vae_chunk_frames=0)


def _vae_with_random_norm_gains():
    """The tiny VAE with RMS-norm gains away from their initial ones, so a dropped gain changes the frames."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    vae = _vae()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for norm in (m for m in vae.modules() if isinstance(m, WanRMS_norm)):
            norm.gamma.copy_(0.5 + torch.rand(norm.gamma.shape, generator=generator))
    return vae


def test_fast_decode_ops_give_the_same_frames_and_switch_back(vae_and_reference):
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm, WanUpsample

    from blade_ops.pipeline.wan_decode import fast_decode_ops_enabled, set_fast_decode_ops

    _, z, _ = vae_and_reference
    vae = _vae_with_random_norm_gains()
    with torch.no_grad():
        reference = vae.decode(z, return_dict=False)[0]
    kinds = (WanCausalConv3d, WanRMS_norm, WanUpsample)
    swapped = [m for m in vae.modules() if isinstance(m, kinds)]
    assert {type(m) for m in swapped} == set(kinds)  # the tiny VAE has each kind, so each forward is exercised
    try:
        assert set_fast_decode_ops(vae, True) == len(swapped) and fast_decode_ops_enabled(vae)
        set_fast_decode_ops(vae, False)
        for chunk, channels_last in ((1, False), (3, False), (2, True)):
            out = decode_wan_chunked(vae, z, chunk, channels_last=channels_last, fast_ops=True)
            assert fast_decode_ops_enabled(vae)
            torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)
    finally:
        set_conv3d_layout(vae, False)
    out = decode_wan_chunked(vae, z, 2)  # the default: diffusers' own forwards again
    assert not fast_decode_ops_enabled(vae) and all("forward" not in m.__dict__ for m in swapped)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)


def test_fast_decode_ops_in_bf16_stay_within_bf16_rounding_of_diffusers(vae_and_reference):
    """In bf16 both decodes differ from the float32 one by rounding; the fast ops may not add to that."""
    _, z, _ = vae_and_reference
    vae32 = _vae_with_random_norm_gains()
    with torch.no_grad():
        reference = vae32.decode(z, return_dict=False)[0]
    vae = copy.deepcopy(vae32).to(torch.bfloat16)
    zb = z.to(torch.bfloat16)
    plain = decode_wan_chunked(vae, zb, 2, fast_ops=False).float()
    fast = decode_wan_chunked(vae, zb, 2, fast_ops=True).float()
    assert torch.isfinite(fast).all()
    err_plain = ((plain - reference).norm() / reference.norm()).item()
    err_fast = ((fast - reference).norm() / reference.norm()).item()
    assert 0 < err_plain < 0.05
    assert err_fast <= 1.5 * err_plain, (err_fast, err_plain)


def test_fast_decode_ops_leave_a_replaced_forward_alone():
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    from blade_ops.pipeline.wan_decode import set_fast_decode_ops

    vae = _vae()
    hooked = next(m for m in vae.modules() if isinstance(m, WanCausalConv3d))
    original = hooked.forward

    def hook(*args, **kwargs):  # e.g. an offloading hook wrapping the module's forward
        return original(*args, **kwargs)

    hooked.forward = hook
    total = set_fast_decode_ops(vae, True)
    assert hooked.__dict__["forward"] is hook
    assert set_fast_decode_ops(vae, False) == total and hooked.__dict__["forward"] is hook
