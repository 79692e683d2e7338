"""Contract of the latent scaling helpers: from_vae_scale inverts to_vae_scale, both equal ComfyUI's Wan21 latent
format (process_out / process_in) bit for bit, and CogVideoX uses its variant's scaling factor and the VAE layout."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from blade_ops.models.variants import shipped_config
from blade_ops.pipeline import LatentScaling, from_vae_scale, latent_scaling, to_vae_scale, unscale_latents

# ComfyUI comfy/latent_formats.py, class Wan21 (scale_factor 1.0)
COMFY_WAN21_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
COMFY_WAN21_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                   3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]
# ComfyUI's own latent format classes, when a checkout is named (as for the server tests in tests/comfyui).
COMFY_LATENT_FORMATS = Path(os.environ.get("COMFYUI_PATH", "/nonexistent")) / "comfy" / "latent_formats.py"


def _latents(*shape, seed=0, dtype=torch.float32):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3).to(dtype)


def _comfy_wan21_formula(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan21.process_out(x) and Wan21.process_in(x) written out with ComfyUI's constants and operation order."""
    mean = torch.tensor(COMFY_WAN21_MEAN).view(1, 16, 1, 1, 1).to(x.dtype)
    std = torch.tensor(COMFY_WAN21_STD).view(1, 16, 1, 1, 1).to(x.dtype)
    return x * std / 1.0 + mean, (x - mean) * 1.0 / std


@pytest.mark.parametrize("source", ["wan", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "config"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_wan_matches_comfyui_wan21_bit_for_bit(source, dtype):
    config = shipped_config("wan2.1-t2v-1.3b", "vae") if source == "config" else source
    x = _latents(2, 16, 3, 4, 6, dtype=dtype)
    out, inp = _comfy_wan21_formula(x)
    assert to_vae_scale(x, config).dtype == dtype
    assert torch.equal(to_vae_scale(x, config), out)
    assert torch.equal(from_vae_scale(x, config), inp)
    scaling = latent_scaling(config)
    assert scaling.latents_mean == tuple(COMFY_WAN21_MEAN) and scaling.latents_std == tuple(COMFY_WAN21_STD)


@pytest.mark.skipif(not COMFY_LATENT_FORMATS.is_file(), reason="set COMFYUI_PATH to a ComfyUI checkout")
def test_wan_equals_comfyui_latent_format_class():
    """Read ComfyUI's own module by path (it imports only torch), not as the ``comfy`` package."""
    spec = importlib.util.spec_from_file_location("_comfy_latent_formats_for_test", COMFY_LATENT_FORMATS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fmt = module.Wan21()
    x = _latents(1, 16, 2, 5, 7, seed=3)
    assert torch.equal(to_vae_scale(x, "wan"), fmt.process_out(x))
    assert torch.equal(from_vae_scale(x, "wan"), fmt.process_in(x))


@pytest.mark.parametrize("config", ["wan", "cogvideox-2b", "cogvideox-5b", "cogvideox"])
def test_round_trip(config):
    wan = latent_scaling(config).family == "wan"
    model = _latents(2, 16, 3, 4, 6) if wan else _latents(2, 3, 16, 4, 6)
    vae = to_vae_scale(model, config)
    assert vae.shape == (2, 16, 3, 4, 6)
    torch.testing.assert_close(from_vae_scale(vae, config), model, rtol=0, atol=2e-6)
    torch.testing.assert_close(to_vae_scale(from_vae_scale(vae, config), config), vae, rtol=0, atol=2e-6)
    double = model.double()
    torch.testing.assert_close(from_vae_scale(to_vae_scale(double, config), config), double, rtol=0, atol=1e-14)


@pytest.mark.parametrize("variant, factor", [("cogvideox-2b", 1.15258426), ("cogvideox-5b", 0.7)])
def test_cogvideox_scale_and_layout(variant, factor):
    model = _latents(1, 3, 16, 4, 6)  # transformer layout [B, T, C, H, W]
    vae = to_vae_scale(model, variant)
    assert torch.equal(vae, model.permute(0, 2, 1, 3, 4) / factor)
    assert latent_scaling(variant) == LatentScaling("cogvideox", scaling_factor=factor)
    assert latent_scaling("cogvideox").scaling_factor == 0.7  # the default variant, 5B


def test_bundle_vae_config_and_unscale_latents_agree(family, tiny_bundle):
    bundle = tiny_bundle(family)
    model = _latents(1, 16, 2, 8, 8) if family == "wan" else _latents(1, 2, 16, 8, 8)
    assert torch.equal(unscale_latents(bundle, model), to_vae_scale(model, bundle.vae.config))
    assert torch.equal(unscale_latents(bundle, model), to_vae_scale(model, bundle.vae.config, family=family))


def test_bad_inputs_say_what_is_expected():
    with pytest.raises(ValueError, match="neither a shipped variant"):
        to_vae_scale(_latents(1, 16, 1, 2, 2), "sd15")
    with pytest.raises(ValueError, match="latents_mean/latents_std \\(Wan\\) or scaling_factor"):
        latent_scaling({"z_dim": 16})
    with pytest.raises(ValueError, match=r"\[B, 16, T, H, W\]"):
        from_vae_scale(_latents(1, 4, 8, 8), "wan")
    with pytest.raises(ValueError, match=r"\[B, 16, T, H, W\]"):
        to_vae_scale(_latents(1, 48, 2, 8, 8), "wan")
    with pytest.raises(ValueError, match="positive scaling_factor"):
        latent_scaling({"scaling_factor": 0.0})
    with pytest.raises(ValueError, match="contains 0"):
        latent_scaling({"latents_mean": [0.0], "latents_std": [0.0]})
    with pytest.raises(ValueError, match="config dict"):
        latent_scaling(3.0)
