"""The Wan2.2 VAE (48 latent channels, 16x spatial stride): its key layouts and the structure its shapes show.

The Wan2.2 VAE is diffusers' ``AutoencoderKLWan`` with ``is_residual=True``: the image is first folded 2x2 into 12
channels (``patch_size`` 2), and each stage is a residual block (resnets plus an average-pooling shortcut without
weights) followed by its down- or up-sampler. Its original layout (the Wan2.2 release and ComfyUI's
``wan2.2_vae.safetensors``) nests every stage: ``encoder.downsamples.{i}.downsamples.{j}`` is resnet j of stage i
and, after the last resnet, the stage's resample (``.resample.1`` / ``.time_conv``); the decoder likewise under
``decoder.upsamples.{i}.upsamples.{j}``. diffusers names the same weights ``encoder.down_blocks.{i}.resnets.{j}`` and
``encoder.down_blocks.{i}.downsampler``. The entries outside the stages (input and output convolutions, middle
block, quant convolutions) are named as in the Wan2.1 VAE.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .shapes import count_indices, need_shape
from .wan import WAN_VAE_RESNET_KEYS

if TYPE_CHECKING:
    import torch

_RESNET = WAN_VAE_RESNET_KEYS
_RESNET_BACK = {v: k for k, v in _RESNET.items()}
_SAMPLER = ("resample.", "time_conv.")
_SIDES = {"encoder": ("downsamples", "down_blocks", "downsampler"), "decoder": ("upsamples", "up_blocks", "upsampler")}


def is_nested_layout(keys) -> bool:
    """Whether original-layout keys nest their stages (the Wan2.2 VAE) rather than list them flat (Wan2.1)."""
    return any(re.match(r"(encoder\.downsamples|decoder\.upsamples)\.\d+\.(down|up)samples\.\d+\.", k) for k in keys)


def to_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original Wan2.2 VAE keys -> diffusers ``AutoencoderKLWan(is_residual=True)`` keys."""
    from ..models import keymaps

    out = {}
    for key, value in state_dict.items():
        m = re.match(r"(encoder|decoder)\.(?:down|up)samples\.(\d+)\.(?:down|up)samples\.(\d+)\.(.+)$", key)
        if m is None:  # outside the stages: named as in the Wan2.1 VAE
            out[keymaps.wan_vae_key_to_diffusers(key, 0)] = value
            continue
        side, stage, index, rest = m.groups()
        _, blocks, sampler = _SIDES[side]
        if rest.startswith(_SAMPLER):
            out[f"{side}.{blocks}.{stage}.{sampler}.{rest}"] = value
        else:
            out[f"{side}.{blocks}.{stage}.resnets.{index}.{_RESNET.get(rest, rest)}"] = value
    return out


def to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers Wan2.2 VAE keys -> the original layout (inverse of :func:`to_diffusers`; writes test files)."""
    from ..models import keymaps

    resnets: dict[tuple[str, str], int] = {}
    for key in state_dict:
        if m := re.match(r"(encoder|decoder)\.(?:down|up)_blocks\.(\d+)\.resnets\.(\d+)\.", key):
            resnets[m[1], m[2]] = max(resnets.get((m[1], m[2]), 0), int(m[3]) + 1)
    out = {}
    stage_key = re.compile(r"(encoder|decoder)\.(?:down|up)_blocks\.(\d+)\.(?:resnets\.(\d+)|(?:down|up)sampler)\."
                           r"(.+)$")
    for key, value in state_dict.items():
        m = stage_key.match(key)
        if m is None:
            out[keymaps.wan_vae_key_to_original(key, 0)] = value
            continue
        side, stage, index, rest = m.groups()
        nested = _SIDES[side][0]
        if index is None:  # the stage's sampler comes after its resnets
            out[f"{side}.{nested}.{stage}.{nested}.{resnets[side, stage]}.{rest}"] = value
        else:
            out[f"{side}.{nested}.{stage}.{nested}.{index}.{_RESNET_BACK.get(rest, rest)}"] = value
    return out


def structure_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """The config values diffusers-key shapes of a residual (Wan2.2) VAE determine; KeyError names a missing key."""
    base, image_channels = need_shape(shapes, "encoder.conv_in.weight", "base width")[:2]
    stages = count_indices(shapes, r"encoder\.down_blocks\.(\d+)\.")
    nrb = count_indices(shapes, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.")
    dim_mult = tuple(
        need_shape(shapes, f"encoder.down_blocks.{i}.resnets.0.conv2.weight", "stage widths")[0] // base
        for i in range(stages)
    )
    temporal = tuple(f"encoder.down_blocks.{i}.downsampler.time_conv.weight" in shapes for i in range(stages - 1))
    decoder_width = need_shape(shapes, "decoder.conv_in.weight", "decoder width")[0]
    return {
        "base_dim": base,
        "decoder_base_dim": decoder_width // dim_mult[-1],
        "z_dim": need_shape(shapes, "post_quant_conv.weight", "latent channels")[0],
        "dim_mult": dim_mult,
        "num_res_blocks": nrb,
        "temperal_downsample": temporal,
        "is_residual": True,
        "in_channels": image_channels,
        "out_channels": need_shape(shapes, "decoder.conv_out.weight", "output channels")[0],
    }


def structure_from_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The same values read from a VAE config (``is_residual`` False for a Wan2.1 VAE)."""
    return {
        "base_dim": cfg["base_dim"],
        "decoder_base_dim": cfg.get("decoder_base_dim") or cfg["base_dim"],
        "z_dim": cfg["z_dim"],
        "dim_mult": tuple(cfg["dim_mult"]),
        "num_res_blocks": cfg["num_res_blocks"],
        "temperal_downsample": tuple(cfg["temperal_downsample"]),
        "is_residual": bool(cfg.get("is_residual", False)),
        "in_channels": cfg.get("in_channels", 3),
        "out_channels": cfg.get("out_channels", 3),
    }


def patch_size(image_channels: int) -> int:
    """The 2D patch folded into the VAE's input channels (3 p^2 channels for RGB)."""
    p = math.isqrt(image_channels // 3)
    if 3 * p * p != image_channels:
        raise ValueError(f"a VAE taking {image_channels} input channels, which is not 3 x p^2 (RGB in p x p patches)")
    return p
