"""Latents -> frames through the family's VAE, with optional tiling (less memory at high resolution) and slicing
(one video of a batch at a time). The Wan VAE decodes several latent frames per call when not tiled
(:mod:`.wan_decode`).

Cancel: ``check_cancel`` is called before every decoder call (a chunk of latent frames, a tile, a frame batch of
CogVideoX); raising in it stops the decode there. The VAE's settings and caches are restored either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from ..models.bundle import ModelBundle
from .scaling import to_vae_scale
from .wan_decode import decode_wan_chunked, is_chunkable


@contextmanager
def _vae_memory_options(vae: torch.nn.Module, tiled: bool, sliced: bool):
    """Switch tiling/slicing for one decode and restore the VAE's own setting afterwards."""
    before = (getattr(vae, "use_tiling", False), getattr(vae, "use_slicing", False))
    if hasattr(vae, "use_tiling"):
        vae.use_tiling = tiled or before[0]
    if hasattr(vae, "use_slicing"):
        vae.use_slicing = sliced or before[1]
    try:
        yield
    finally:
        if hasattr(vae, "use_tiling"):
            vae.use_tiling = before[0]
        if hasattr(vae, "use_slicing"):
            vae.use_slicing = before[1]


@contextmanager
def _before_each_decoder_call(vae: torch.nn.Module, check_cancel: Callable[[], None] | None) -> Iterator[None]:
    """Run ``check_cancel`` before every call of ``vae.decoder`` inside the block (once up front for a VAE without
    one): the chunks of :func:`decode_wan_chunked` and the loops diffusers runs itself (tiles, CogVideoX frame
    batches, Wan frame by frame)."""
    decoder = getattr(vae, "decoder", None)
    if check_cancel is None:
        yield
        return
    if not isinstance(decoder, torch.nn.Module):
        check_cancel()
        yield
        return
    handle = decoder.register_forward_pre_hook(lambda module, args: check_cancel())
    try:
        yield
    finally:
        handle.remove()


def unscale_latents(bundle: ModelBundle, latents: torch.Tensor) -> torch.Tensor:
    """Undo the latent normalisation the transformer works in; returns [B, C, T, H, W] for the bundle's VAE.

    Wan: x * std + mean per channel (from the VAE config). CogVideoX: [B, T, C, H, W] -> [B, C, T, H, W] / scale.
    See :func:`~blade_ops.pipeline.scaling.to_vae_scale`.
    """
    bundle.require("vae")
    return to_vae_scale(latents, bundle.vae.config, bundle.family.name)


@torch.no_grad()
def decode(
    bundle: ModelBundle,
    latents: torch.Tensor,
    *,
    tiled: bool = False,
    sliced: bool = False,
    chunk_frames: int | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Frames [B, F, H, W, C] float32 in [0, 1] on the CPU from final latents in the family's layout.

    ``chunk_frames``: latent frames per decoder call for an untiled Wan VAE (None: sized to the resolution, 1: the
    diffusers frame-by-frame loop). Other VAEs ignore it. ``check_cancel``: called before each decoder call; raise in
    it to stop (see the module docstring).
    """
    bundle.require("vae")
    vae = bundle.vae
    device = next(vae.parameters()).device
    z = unscale_latents(bundle, latents.to(device=device, dtype=torch.float32)).to(vae.dtype)
    with _vae_memory_options(vae, tiled, sliced), _before_each_decoder_call(vae, check_cancel):
        if is_chunkable(vae) and not vae.use_tiling and chunk_frames != 1:
            parts = z.split(1) if vae.use_slicing else (z,)
            video = torch.cat([decode_wan_chunked(vae, part, chunk_frames) for part in parts])
        else:
            video = vae.decode(z, return_dict=False)[0]  # [B, C, F, H, W] in [-1, 1]
    return _to_cpu_frames(video)


def _to_cpu_frames(video: torch.Tensor) -> torch.Tensor:
    """[B, C, F, H, W] in [-1, 1] -> float32 [B, F, H, W, C] in [0, 1] on the CPU.

    From CUDA the frames land in page-locked memory: copying ~400 MB of frames into freshly allocated pageable
    memory costs 0.3 s on an H100 host (page faults), into pinned memory under 0.01 s (benchmarks/vae_decode.py).
    """
    frames = video.permute(0, 2, 3, 4, 1)
    if not video.is_cuda:
        return (frames.float() / 2 + 0.5).clamp(0, 1).contiguous()
    staged = torch.empty(frames.shape, dtype=torch.float32, device=video.device)
    staged.copy_(frames).mul_(0.5).add_(0.5).clamp_(0, 1)
    try:
        host = torch.empty(staged.shape, dtype=torch.float32, pin_memory=True)
    except RuntimeError:  # no page-locked memory to be had: the plain copy is slower, not wrong
        return staged.cpu()
    return host.copy_(staged)
