"""Wan VAE decode in chunks of several latent frames instead of one.

diffusers' ``AutoencoderKLWan`` decodes one latent frame per decoder call and carries the causal convolutions'
last two input frames across calls in a feature cache. Every cached layer only looks at its own last two input
frames, so a call on ``n`` latent frames leaves the cache exactly as ``n`` single-frame calls would and returns
the same frames: the chunk length changes how much work each call hands the GPU, not the result. Longer chunks
turn ~30 kernel launches and cache copies per latent frame into ~30 per chunk and give cuDNN larger
convolutions. The first latent frame is still decoded on its own, as the decoder's time upsampling requires.

Memory grows with the chunk: :func:`default_chunk_frames` keeps one chunk's full-resolution activations near the
size that an 81x480x832 video reaches at two latent frames. On CUDA the 3D convolutions run in channels-last
layout, which cuDNN serves without transposing every input and output (benchmarks/vae_decode.py).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

#: Dynamo's per-function compile limit while a compiled decoder runs. The decoder's parts compile separately
#: (:func:`decoder_parts`), one graph per (block, chunk position): the four up blocks share one forward, so 4 x 3
#: or more graphs at one resolution, beyond dynamo's default of 8, after which the rest would run uncompiled.
DECODER_RECOMPILE_LIMIT = 64

#: Output pixels (frames x height x width) one chunk may cover by default: 8 frames at 480x832.
CHUNK_PIXEL_BUDGET = 8 * 480 * 832


def is_chunkable(vae: torch.nn.Module) -> bool:
    """True for a diffusers AutoencoderKLWan, whose feature-cache decode this module drives."""
    try:
        from diffusers import AutoencoderKLWan
    except ImportError:  # pragma: no cover - diffusers is a hard dependency of the pack
        return False
    return isinstance(vae, AutoencoderKLWan) and all(
        hasattr(vae, name) for name in ("clear_cache", "decoder", "post_quant_conv")
    )


def default_chunk_frames(
    latent_height: int, latent_width: int, spatial_ratio: int = 8, temporal_ratio: int = 4
) -> int:
    """Latent frames per chunk at this latent size: as many as fit :data:`CHUNK_PIXEL_BUDGET`, at least 1."""
    frame_pixels = latent_height * spatial_ratio * latent_width * spatial_ratio
    return max(1, CHUNK_PIXEL_BUDGET // (temporal_ratio * frame_pixels))


def decoder_parts(vae: torch.nn.Module) -> list[torch.nn.Module]:
    """The parts of a Wan VAE decoder that compiling it compiles: the input conv, the middle block, each up
    block and the output norm and conv. The decoder's own forward, with its loop over the up blocks, stays eager.

    Why not the whole decoder: where the time upsampling's string-sentinel comparison breaks the graph (torch
    2.11), the break falls inside that loop, so dynamo gives up on the decoder's frame at the third chunk of the
    first decode. The graphs it had built for the first two chunks are then never used again, and the second
    decode compiles every part anew for those chunks (15 graphs, 13-43 s on an H100). Compiling the parts from
    the start gives the same graphs at the first decode and none later.
    """
    decoder = vae.decoder
    return [decoder.conv_in, decoder.mid_block, *decoder.up_blocks, decoder.norm_out, decoder.conv_out]


def is_decoder_compiled(vae: torch.nn.Module) -> bool:
    """Whether the parts of this Wan VAE's decoder are compiled (by ``compile_vae_decoder``)."""
    return all(getattr(part, "_compiled_call_impl", None) is not None for part in decoder_parts(vae))


def set_conv3d_layout(vae: torch.nn.Module, channels_last: bool) -> None:
    """Store every Conv3d weight of ``vae`` channels-last (or contiguous); values are unchanged."""
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    for module in vae.modules():
        if isinstance(module, torch.nn.Conv3d) and not module.weight.is_contiguous(memory_format=fmt):
            module.weight.data = module.weight.data.contiguous(memory_format=fmt)


def _causal_conv_forward(conv: torch.nn.Module, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
    """diffusers' ``WanCausalConv3d.forward`` with the spatial zero padding left to the convolution itself.

    diffusers pads height and width with ``F.pad``, a full copy of the input before every 3x3x3 convolution; the
    convolution's own ``padding`` argument pads the same zeros without that copy. Only the causal time padding
    (the cached frames, or zeros without a cache) is still concatenated in front.
    """
    w_pad, _, h_pad, _, t_pad, _ = conv._padding
    if cache_x is not None and t_pad > 0:
        x = torch.cat([cache_x.to(x.device), x], dim=2)
        t_pad -= cache_x.shape[2]
    if t_pad > 0:
        x = torch.nn.functional.pad(x, (0, 0, 0, 0, t_pad, 0))
    return torch.nn.functional.conv3d(
        x, conv.weight, conv.bias, conv.stride, (0, h_pad, w_pad), conv.dilation, conv.groups
    )


#: F.normalize's floor on the norm (1e-12), squared, as ``F.rms_norm``'s eps per channel is divided out below.
_NORM_FLOOR_SQ = 1e-24


def _rms_norm_forward(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """diffusers' ``WanRMS_norm.forward`` (``F.normalize`` over channels in float32, cast, times sqrt(C), gamma and
    bias: six passes over the activations, two in float32) as one fused ``F.rms_norm`` over the channels.

    x / sqrt(mean(x^2) + eps) equals normalize(x) * sqrt(C) up to float rounding; the eps stands in for
    normalize's 1e-12 floor on the norm. In channels-last layout the channels are the innermost dimension, so the
    moved view is contiguous and no copy is made.
    """
    if not norm.channel_first or x.dim() != 5:
        return type(norm).forward(norm, x)
    channels = x.shape[1]
    weight = norm.gamma.reshape(channels).to(x.dtype)
    y = torch.nn.functional.rms_norm(x.movedim(1, -1), (channels,), weight, _NORM_FLOOR_SQ / channels).movedim(-1, 1)
    return y + norm.bias if isinstance(norm.bias, torch.Tensor) else y


def _upsample_forward(upsample: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """diffusers' ``WanUpsample.forward`` without its float32 round trip: nearest-neighbour upsampling copies
    values, so doing it in the input's dtype gives the same numbers with a third of the memory traffic."""
    if upsample.mode not in ("nearest", "nearest-exact"):
        return type(upsample).forward(upsample, x)
    return torch.nn.functional.interpolate(
        x, upsample.size, upsample.scale_factor, upsample.mode, upsample.align_corners,
        recompute_scale_factor=upsample.recompute_scale_factor,
    )


def _fast_forwards() -> dict[type, object]:
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm, WanUpsample

    return {WanCausalConv3d: _causal_conv_forward, WanRMS_norm: _rms_norm_forward, WanUpsample: _upsample_forward}


def set_fast_decode_ops(vae: torch.nn.Module, enable: bool) -> int:
    """Swap the Wan VAE's causal convolutions, RMS norms and upsamplers to the leaner forwards above (or back to
    diffusers' own); returns how many modules it switched. The frames are the same up to float rounding
    (tests/pipeline/test_wan_decode.py).
    A module whose forward something else has replaced (a hook that wraps it) is left alone and not counted.
    """
    forwards = _fast_forwards()
    count = 0
    for module in vae.modules():
        forward = forwards.get(type(module))
        current = getattr(module.__dict__.get("forward"), "__func__", None)
        if forward is None or ("forward" in module.__dict__ and current is not forward):
            continue
        if enable:
            module.forward = forward.__get__(module)
        else:
            module.__dict__.pop("forward", None)
        count += 1
    return count


def fast_decode_ops_enabled(vae: torch.nn.Module) -> bool:
    """Whether :func:`set_fast_decode_ops` switched this VAE's modules."""
    forwards = set(_fast_forwards().values())
    return any(getattr(m.__dict__.get("forward"), "__func__", None) in forwards for m in vae.modules())


@torch.no_grad()
def decode_wan_chunked(
    vae: torch.nn.Module,
    z: torch.Tensor,
    chunk_frames: int | None = None,
    *,
    channels_last: bool | None = None,
    fast_ops: bool = False,
) -> torch.Tensor:
    """Frames [B, 3, F, H, W] in [-1, 1] from Wan latents [B, C, T, H, W] (in the VAE's scale), ``chunk_frames``
    latent frames per decoder call after the first (default: :func:`default_chunk_frames`).

    ``channels_last`` (default: on for CUDA tensors) switches the VAE's Conv3d weights and the latents to
    channels-last layout first; the weights stay that way. Equal to ``vae.decode(z).sample`` up to float
    rounding; see the module docstring for why. ``fast_ops`` switches the VAE to :func:`set_fast_decode_ops`'s
    forwards (or back to diffusers' own); the VAE stays that way. Off by default until benchmarks/
    vae_decode_breakdown.py has timed it on a GPU.
    """
    if not is_chunkable(vae):
        raise TypeError(f"decode_wan_chunked needs a diffusers AutoencoderKLWan, got {type(vae).__name__}")
    if z.dim() != 5:
        raise ValueError(f"Wan latents must be [B, C, T, H, W], got shape {tuple(z.shape)}")
    if chunk_frames is None:
        ratio = int(getattr(vae, "spatial_compression_ratio", 8))
        chunk_frames = default_chunk_frames(z.shape[-2], z.shape[-1], ratio)
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    if channels_last is None:
        channels_last = z.is_cuda
    set_fast_decode_ops(vae, fast_ops)
    if channels_last:
        set_conv3d_layout(vae, True)
        z = z.contiguous(memory_format=torch.channels_last_3d)
    compiled = is_decoder_compiled(vae)
    vae.clear_cache()
    try:
        limit = torch._dynamo.config.patch(recompile_limit=DECODER_RECOMPILE_LIMIT) if compiled else nullcontext()
        with limit:
            return _decode_chunks(vae, z, chunk_frames)
    finally:
        vae.clear_cache()


def _decode_chunks(vae: torch.nn.Module, z: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """The first latent frame alone, then ``chunk_frames`` at a time, through the decoder's feature cache."""
    num_frames = z.shape[2]
    starts = [0, *range(1, num_frames, chunk_frames)]
    x = vae.post_quant_conv(z)
    pieces = []
    for i, start in enumerate(starts):
        end = 1 if i == 0 else min(start + chunk_frames, num_frames)
        vae._conv_idx = [0]
        pieces.append(
            vae.decoder(x[:, :, start:end], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0)
        )
    out = torch.cat(pieces, dim=2)
    del pieces
    if getattr(vae.config, "patch_size", None) is not None:
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        out = unpatchify(out, patch_size=vae.config.patch_size)
    return out.clamp_(-1.0, 1.0)
