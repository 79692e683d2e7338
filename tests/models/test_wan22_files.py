"""Contract: Wan2.2 models load from ComfyUI's single files as from their diffusers folders. TI2V-5B's transformer
(original layout, fp32/bf16 and fp8_scaled) and the Wan2.2 VAE (nested original layout) load equal to the folder's
parts and are recognised from their keys; A14B's two expert files (fp8_scaled high-noise, bf16 low-noise) with the
Wan2.1 VAE give the same bundle as its folder. The shipped configs build the published geometry, and full-size
headers are recognised as the shipped variants without loading anything."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from blade_ops.families import WAN, WAN22_A14B, WAN22_TI2V, wan22_vae
from blade_ops.models import (
    detect_family,
    detect_variant,
    keymaps,
    load_model_bundle,
    load_transformer,
    load_vae,
    shipped_config,
)
from tests.models.model_helpers import dequantised, fp8_scaled, meta_state_shapes, save, write_header_only

TI2V, A14B = WAN22_TI2V.name, WAN22_A14B.name
HEADS = {"num_attention_heads": 2, "attention_head_dim": 12}  # invisible in the weights (see model_helpers)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def _forward(model, channels: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, channels, 2, 4, 4, generator=g), torch.randn(1, 5, 32, generator=g)
    with torch.no_grad():
        return model(x.to(model.dtype), torch.tensor([500.0]), text.to(model.dtype)).sample


@pytest.fixture(scope="module")
def folder(tiny_folder):
    return {name: tiny_folder(name) for name in (TI2V, A14B)}


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_ti2v_transformer_file_equals_folder(folder, tmp_path, dtype):
    """A bf16 file holds every weight in bf16 (also those diffusers keeps in fp32): the folder it is compared with
    holds the same bf16 values."""
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    source = load_transformer(folder[TI2V], dtype="fp32")
    source.load_state_dict({k: v.to(torch_dtype).float() for k, v in source.state_dict().items()})
    source.save_pretrained(tmp_path / "folder", safe_serialization=True)
    ref = load_transformer(tmp_path / "folder", dtype=dtype)
    original = keymaps.wan_transformer_to_original(source.state_dict())
    path = save({"model.diffusion_model." + k: v.to(torch_dtype) for k, v in original.items()},
                tmp_path / f"wan2.2_ti2v_tiny_{dtype}.safetensors")
    model = load_transformer(path, config=HEADS, dtype=dtype)
    _same(model, ref)
    assert torch.equal(_forward(model, 48), _forward(ref, 48))
    assert detect_family(path) == TI2V and detect_variant(path) is None  # tiny widths: no shipped variant


def test_fp8_scaled_file_equals_folder_of_the_dequantised_weights(folder, tmp_path):
    source = load_transformer(folder[TI2V], dtype="fp32")
    packed = fp8_scaled(keymaps.wan_transformer_to_original(source.state_dict()))
    path = save(packed, tmp_path / "wan2.2_ti2v_tiny_fp8_scaled.safetensors")
    source.load_state_dict(keymaps.wan_transformer_to_diffusers(dequantised(packed)))
    source.save_pretrained(tmp_path / "dequantised", safe_serialization=True)
    ref = load_transformer(tmp_path / "dequantised", dtype="fp32")
    model = load_transformer(path, config=HEADS, dtype="fp32")
    _same(model, ref)
    assert torch.equal(_forward(model, 48), _forward(ref, 48))


def test_wan22_vae_original_layout_equals_folder(folder, tmp_path):
    ref = load_vae(folder[TI2V], dtype="fp32")
    original = wan22_vae.to_original(ref.state_dict())
    assert "decoder.upsamples.0.upsamples.0.residual.2.weight" in original  # the layout ComfyUI recognises
    assert wan22_vae.to_diffusers(original).keys() == ref.state_dict().keys()
    path = save(original, tmp_path / "wan2.2_vae.safetensors")
    vae = load_vae(path, dtype="fp32")
    _same(vae, ref)
    assert vae.config.patch_size == 2 and vae.config.scale_factor_spatial == 16
    assert list(vae.config.latents_mean) == list(ref.config.latents_mean)
    z = torch.randn(1, 48, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(vae.decode(z).sample, ref.decode(z).sample)
    assert detect_family(path) == TI2V


def test_a14b_expert_files_give_the_folder_bundle(folder, tmp_path):
    """ComfyUI's A14B files: high-noise fp8_scaled, low-noise bf16, the Wan2.1 VAE, the text encoder folder."""
    ref = load_model_bundle(folder[A14B], parts=("transformer", "vae"), dtype="fp32")
    high = fp8_scaled(keymaps.wan_transformer_to_original(ref.transformer.state_dict()))
    ref.transformer.load_state_dict(keymaps.wan_transformer_to_diffusers(dequantised(high)))
    low = keymaps.wan_transformer_to_original(ref.transformer_2.state_dict())
    files = {
        "high": save(high, tmp_path / "wan2.2_t2v_high_noise_tiny_fp8_scaled.safetensors"),
        "low": save({k: v.to(torch.bfloat16) for k, v in low.items()}, tmp_path / "low_noise_tiny_bf16.safetensors"),
        "vae": save(keymaps.wan_vae_to_original(ref.vae.state_dict(), 1), tmp_path / "wan_2.1_vae.safetensors"),
    }
    bundle = load_model_bundle(
        files["high"], expert_paths={"transformer_2": files["low"]}, vae_path=files["vae"],
        text_encoder_path=folder[A14B] / "text_encoder", config=HEADS, dtype="fp32",
    )
    assert bundle.family is WAN22_A14B  # two files of Wan2.1 shapes: the family with two experts
    _same(bundle.transformer, ref.transformer)
    expected_low = {k: v.to(torch.bfloat16).float() for k, v in ref.transformer_2.state_dict().items()}
    assert all(torch.equal(v, expected_low[k]) for k, v in bundle.transformer_2.state_dict().items())
    _same(bundle.vae, ref.vae)
    assert detect_family(files["high"]) == WAN.name  # one file alone looks like Wan2.1 14B
    with pytest.raises(ValueError, match="Pass expert_paths=\\{'transformer_2': ...\\} with the low-noise expert"):
        load_model_bundle(files["high"], family=A14B, parts=("transformer",), config=HEADS)
    with pytest.raises(ValueError, match="holds a Wan2.1 vae .*, not a Wan2.2 TI2V-5B one; load the vae made for"):
        load_model_bundle(folder[TI2V], vae_path=files["vae"], parts=("transformer", "vae"))


def test_shipped_wan22_configs_have_the_published_geometry():
    ti2v = shipped_config(TI2V, "transformer")
    assert (ti2v["num_attention_heads"], ti2v["attention_head_dim"], ti2v["ffn_dim"], ti2v["num_layers"]) == (
        24, 128, 14336, 30)
    assert ti2v["in_channels"] == ti2v["out_channels"] == 48
    a14b = shipped_config(A14B, "transformer")
    assert (a14b["num_attention_heads"], a14b["attention_head_dim"], a14b["ffn_dim"], a14b["num_layers"]) == (
        40, 128, 13824, 40)
    vae = shipped_config(TI2V, "vae")
    assert (vae["z_dim"], vae["base_dim"], vae["decoder_base_dim"], vae["patch_size"]) == (48, 160, 256, 2)
    assert len(vae["latents_mean"]) == len(vae["latents_std"]) == 48 and vae["scale_factor_spatial"] == 16
    assert shipped_config(A14B, "vae") == shipped_config("wan2.1-t2v-14b", "vae")
    assert WAN22_TI2V.scheduler_defaults["flow_shift"] == 5.0 and WAN22_A14B.scheduler_defaults["flow_shift"] == 12.0


def test_full_size_headers_are_recognised(tmp_path):
    """Sparse files with the real shapes (nothing loaded): ComfyUI's wan2.2_ti2v_5B and wan2.2_vae files."""
    shapes = meta_state_shapes(WanTransformer3DModel, shipped_config(TI2V, "transformer"))
    assert shapes["patch_embedding.weight"] == (3072, 48, 1, 2, 2)
    original = {"model.diffusion_model." + keymaps.wan_transformer_key_to_original(k): s for k, s in shapes.items()}
    path = write_header_only(original, tmp_path / "wan2.2_ti2v_5B_fp16.safetensors", dtype="F16")
    assert detect_family(path) == TI2V and detect_variant(path) == TI2V
    vae_shapes = meta_state_shapes(AutoencoderKLWan, shipped_config(TI2V, "vae"))
    vae_meta = {k: torch.empty(s, device="meta") for k, s in vae_shapes.items()}
    vae_original = {k: tuple(v.shape) for k, v in wan22_vae.to_original(vae_meta).items()}
    vae_path = write_header_only(vae_original, tmp_path / "wan2.2_vae.safetensors")
    assert detect_family(vae_path) == TI2V and detect_variant(vae_path, part="vae") == TI2V
