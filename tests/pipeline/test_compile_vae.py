"""Contract: compile_vae_decoder compiles a Wan VAE's decoder in place, the compiled chunked decode gives the eager
frames, only the first decode at a size compiles anything, and other VAEs are left alone."""

import pytest
import torch
from torch._dynamo.utils import counters

from blade_ops.models.tiny import tiny_vae
from blade_ops.pipeline.compile import compile_vae_decoder
from blade_ops.pipeline.wan_decode import decode_wan_chunked, decoder_parts, is_decoder_compiled


def test_compiled_wan_decoder_gives_the_eager_frames():
    torch._dynamo.reset()
    vae = tiny_vae("wan")
    z = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    reference = decode_wan_chunked(vae, z, 2)
    assert compile_vae_decoder(vae) is True
    assert is_decoder_compiled(vae) and getattr(vae.decoder, "_compiled_call_impl", None) is None
    first = decode_wan_chunked(vae, z, 2)  # compiles two graphs: the first latent frame, the next two
    again = decode_wan_chunked(vae, z, 2)
    assert torch.isfinite(again).all()
    torch.testing.assert_close(first, reference, rtol=0, atol=1e-4)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    impls = [part._compiled_call_impl for part in decoder_parts(vae)]
    assert compile_vae_decoder(vae) is True  # same options: nothing recompiled
    assert [part._compiled_call_impl for part in decoder_parts(vae)] == impls


def test_second_decode_compiles_nothing_when_the_sentinel_breaks_the_graph(monkeypatch):
    """On torch 2.11 the time upsampling's ``cached_tensor == "Rep"`` breaks dynamo's graph from the third chunk
    on, inside the decoder's loop over its up blocks. Compiling the decoder as a whole then made the second decode
    compile 15 graphs again (measured on an H100). The same break is forced here, so the check holds on any torch."""
    from diffusers.models.autoencoders import autoencoder_kl_wan

    resample_forward = autoencoder_kl_wan.WanResample.forward

    def breaking_forward(self, x, feat_cache=None, feat_idx=[0]):  # noqa: B006 - diffusers' own signature
        if feat_cache is not None and isinstance(feat_cache[feat_idx[0]], torch.Tensor):
            torch._dynamo.graph_break()
        return resample_forward(self, x, feat_cache, feat_idx)

    monkeypatch.setattr(autoencoder_kl_wan.WanResample, "forward", breaking_forward)
    torch._dynamo.reset()
    vae = tiny_vae("wan")
    z = torch.randn(1, 16, 6, 4, 4, generator=torch.Generator().manual_seed(1))
    reference = decode_wan_chunked(vae, z, 2)  # chunks of 1, 2, 2 and 1 latent frames
    compile_vae_decoder(vae)
    # Graph breaks and recompiles are dynamo's: its "eager" backend counts the same graphs as inductor, without
    # the minutes of C++ code generation per graph on the CPU (the test above runs inductor).
    for part in decoder_parts(vae):
        part._compiled_call_impl = torch.compile(part._call_impl, backend="eager", dynamic=False)
    new_graphs = []
    for _ in range(3):
        before = counters["stats"]["unique_graphs"]
        frames = decode_wan_chunked(vae, z, 2)
        new_graphs.append(counters["stats"]["unique_graphs"] - before)
        assert torch.isfinite(frames).all()
        torch.testing.assert_close(frames, reference, rtol=0, atol=1e-4)
    assert new_graphs[0] > 0 and new_graphs[1:] == [0, 0], new_graphs


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
    for part in decoder_parts(vae):  # marks it compiled without paying for a compile
        part._compiled_call_impl = part._call_impl
    decode_wan_chunked(vae, z, 2)
    assert seen and set(seen) == {DECODER_RECOMPILE_LIMIT} and DECODER_RECOMPILE_LIMIT > default
    assert torch._dynamo.config.recompile_limit == default
