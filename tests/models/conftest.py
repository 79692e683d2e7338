"""Fixtures for the model-loading tests: tiny models and single files written in each supported key layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from blade_ops.models import keymaps
from blade_ops.models.tiny import tiny_transformer, tiny_vae
from tests.models.model_helpers import save


@pytest.fixture(scope="session")
def wan_tiny():
    return tiny_transformer("wan", seed=3)


@pytest.fixture(scope="session")
def cog_tiny():
    return tiny_transformer("cogvideox", seed=4)


@pytest.fixture(scope="session")
def wan_vae_tiny():
    return tiny_vae("wan", seed=5)


@pytest.fixture(scope="session")
def cog_vae_tiny():
    return tiny_vae("cogvideox", seed=6)


@pytest.fixture(scope="session")
def files(tmp_path_factory, wan_tiny, cog_tiny, wan_vae_tiny, cog_vae_tiny) -> dict[str, Path]:
    """Single files of the tiny models in every layout the loader reads, written once per session."""
    d = tmp_path_factory.mktemp("single_files")
    wan_sd, wan_vae_sd = wan_tiny.state_dict(), wan_vae_tiny.state_dict()
    nrb = wan_vae_tiny.config.num_res_blocks
    out = {
        "wan_original": save(keymaps.wan_transformer_to_original(wan_sd), d / "wan_t2v_tiny.safetensors"),
        "wan_comfy": save(
            keymaps.wan_transformer_to_original(wan_sd, prefix="model.diffusion_model."),
            d / "wan2.1_t2v_tiny_bf16.safetensors",
        ),
        "wan_diffusers": save(wan_sd, d / "wan_diffusers_keys.safetensors"),
        "wan_vae_original": save(keymaps.wan_vae_to_original(wan_vae_sd, nrb), d / "wan_2.1_vae.safetensors"),
        "wan_combined": save(
            {
                **keymaps.wan_transformer_to_original(wan_sd, prefix="model.diffusion_model."),
                **{"first_stage_model." + k: v for k, v in keymaps.wan_vae_to_original(wan_vae_sd, nrb).items()},
            },
            d / "wan_checkpoint.safetensors",
        ),
        "cog_diffusers": save(cog_tiny.state_dict(), d / "cogvideox_tiny.safetensors"),
        "cog_sat": save(
            {
                "model.diffusion_model." + k: v
                for k, v in keymaps.cogvideox_diffusers_to_sat(cog_tiny.state_dict()).items()
            },
            d / "cogvideox_sat.safetensors",
        ),
        "cog_vae": save(cog_vae_tiny.state_dict(), d / "cogvideox_vae.safetensors"),
    }
    return out
