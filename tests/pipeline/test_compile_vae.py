"""Contract: compile_vae_decoder compiles a Wan VAE's decoder in place, the compiled chunked decode gives the eager
frames, and other VAEs are left alone."""

import pytest
import torch

from blade_ops.models.tiny import tiny_vae
from blade_ops.pipeline.compile import compile_vae_decoder
from blade_ops.pipeline.wan_decode import decode_wan_chunked


def test_compiled_wan_decoder_gives_the_eager_frames():
    torch._dynamo.reset()
    vae = tiny_vae("wan")
    z = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    reference = decode_wan_chunked(vae, z, 2)
    assert compile_vae_decoder(vae) is True
    assert vae.decoder._compiled_call_impl is not None
    first = decode_wan_chunked(vae, z, 2)  # compiles two graphs: the first latent frame, the next two
    again = decode_wan_chunked(vae, z, 2)
    assert torch.isfinite(again).all()
    torch.testing.assert_close(first, reference, rtol=0, atol=1e-4)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    impl = vae.decoder._compiled_call_impl
    assert compile_vae_decoder(vae) is True  # same options: nothing recompiled
    assert vae.decoder._compiled_call_impl is impl


def test_other_vaes_and_bad_modes():
    assert compile_vae_decoder(tiny_vae("cogvideox")) is False
    with pytest.raises(ValueError, match="mode='fast' is not a torch.compile mode"):
        compile_vae_decoder(tiny_vae("wan"), mode="fast")


def test_compiled_decoder_runs_with_a_raised_recompile_limit(monkeypatch):
    """Graph breaks in the decoder split it into per-block functions that need more than dynamo's default 8
    graphs; the compiled decode must lift the limit while it runs (and only then)."""
    from blade_ops.pipeline.wan_decode import DECODER_RECOMPILE_LIMIT

    vae = tiny_vae("wan")
    seen = []
    real_forward = vae.decoder.forward

    def spy(*args, **kwargs):
        seen.append(torch._dynamo.config.recompile_limit)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(vae.decoder, "forward", spy)
    default = torch._dynamo.config.recompile_limit
    z = torch.randn(1, 16, 3, 4, 4)
    decode_wan_chunked(vae, z, 2)
    assert seen and set(seen) == {default}
    seen.clear()
    vae.decoder._compiled_call_impl = vae.decoder._call_impl  # marks it compiled without paying for a compile
    decode_wan_chunked(vae, z, 2)
    assert seen and set(seen) == {DECODER_RECOMPILE_LIMIT} and DECODER_RECOMPILE_LIMIT > default
    assert torch._dynamo.config.recompile_limit == default
