"""Contract: a single safetensors file in any supported layout loads into a model equal to the one it was saved from.

Layouts: original Wan (plain and ComfyUI ``model.diffusion_model.``), diffusers keys, Wan VAE original layout,
combined checkpoints, CogVideoX diffusers keys and SAT. The tiny models have widths no shipped variant has, so
these tests also exercise config inference (plus explicit overrides for settings no tensor reveals).
"""

from __future__ import annotations

import pytest
import torch

from blade_ops.models import detect_family, detect_variant, load_model_bundle, load_transformer, load_vae
from blade_ops.models.tiny import tiny_transformer_config
from tests.models.model_helpers import COG_TINY_VAE, WAN_TINY_HEADS, cog_forward, save, wan_forward


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k].float(), sb[k].float()), k


@pytest.mark.parametrize("layout", ["wan_original", "wan_comfy", "wan_diffusers"])
def test_wan_transformer_file_equals_source(files, wan_tiny, layout):
    model = load_transformer(files[layout], config=WAN_TINY_HEADS, dtype="fp32")
    _same_weights(model, wan_tiny)
    assert torch.equal(wan_forward(model), wan_forward(wan_tiny))


def test_wan_transformer_full_config_override(files, wan_tiny):
    """A complete config dict (here the tiny one) is accepted as well as a partial override."""
    model = load_transformer(files["wan_comfy"], config=tiny_transformer_config("wan"), dtype="fp32")
    assert torch.equal(wan_forward(model), wan_forward(wan_tiny))


def test_wan_config_inferred_from_shapes_alone(tmp_path):
    """With Wan's 128-wide heads every setting is inferred: no config needed."""
    from diffusers import WanTransformer3DModel

    from blade_ops.models import keymaps

    cfg = dict(tiny_transformer_config("wan"), num_attention_heads=1, attention_head_dim=128, num_layers=1)
    torch.manual_seed(0)
    src = WanTransformer3DModel(**cfg).eval()
    path = save(
        keymaps.wan_transformer_to_original(src.state_dict(), "model.diffusion_model."), tmp_path / "w.safetensors"
    )
    model = load_transformer(path, dtype="fp32")
    assert model.config.num_attention_heads == 1 and model.config.num_layers == 1
    assert torch.equal(wan_forward(model), wan_forward(src))
    assert detect_variant(path) is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_dtype_matches_diffusers_rules(files, dtype):
    """Weights take the asked dtype, except modules diffusers keeps in fp32 (Wan's norms and time embedding)."""
    model = load_transformer(files["wan_comfy"], config=WAN_TINY_HEADS, dtype=dtype)
    assert model.blocks[0].attn1.to_q.weight.dtype == dtype
    assert model.scale_shift_table.dtype == torch.float32
    assert not any(p.device.type == "meta" for p in model.parameters())
    assert torch.isfinite(wan_forward(model)).all()


def test_wan_vae_original_layout(files, wan_vae_tiny):
    vae = load_vae(files["wan_vae_original"], dtype="fp32")
    _same_weights(vae, wan_vae_tiny)
    z = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(vae.decode(z).sample, wan_vae_tiny.decode(z).sample)
    assert detect_family(files["wan_vae_original"]) == "wan"


def test_combined_checkpoint_gives_transformer_and_vae(files, wan_tiny, wan_vae_tiny):
    bundle = load_model_bundle(
        files["wan_combined"], parts=("transformer", "vae"), config=WAN_TINY_HEADS, dtype="fp32"
    )
    assert bundle.family.name == "wan" and bundle.text_encoder is None
    _same_weights(bundle.transformer, wan_tiny)
    _same_weights(bundle.vae, wan_vae_tiny)
    assert bundle.sources == {"transformer": str(files["wan_combined"]), "vae": str(files["wan_combined"])}


@pytest.mark.parametrize("layout", ["cog_diffusers", "cog_sat"])
def test_cogvideox_transformer_file_equals_source(files, cog_tiny, layout):
    """Head count comes from the per-head qk LayerNorm; rotary is the default (5B-style) setting."""
    model = load_transformer(files[layout], dtype="fp32")
    _same_weights(model, cog_tiny)
    assert torch.equal(cog_forward(model), cog_forward(cog_tiny))
    assert detect_family(files[layout]) == "cogvideox"


def test_cogvideox_vae_file(files, cog_vae_tiny):
    vae = load_vae(files["cog_vae"], config=COG_TINY_VAE, dtype="fp32")
    _same_weights(vae, cog_vae_tiny)
    assert vae.config.scaling_factor == pytest.approx(0.7)  # default variant: CogVideoX-5B


def test_bundle_from_single_files(files, tiny_folder):
    """Transformer file + VAE file + text encoder from a diffusers folder, as ComfyUI users hold them."""
    folder = tiny_folder("wan")
    bundle = load_model_bundle(
        files["wan_comfy"],
        vae_path=files["wan_vae_original"],
        text_encoder_path=folder / "text_encoder",
        config=WAN_TINY_HEADS,
        dtype="fp32",
    )
    assert type(bundle.text_encoder).__name__ == "UMT5EncoderModel"
    assert bundle.tokenizer("a red ball").input_ids[-1] == 1  # T5-style </s>
    assert bundle.variant is None and bundle.vae is not None


def test_unprefixed_vae_beside_prefixed_transformer(tmp_path, files, wan_vae_tiny):
    """A combined file whose VAE keys carry no prefix: the transformer's keys are not mistaken for the VAE's."""
    from safetensors.torch import load_file

    sd = {**load_file(str(files["wan_comfy"])), **load_file(str(files["wan_vae_original"]))}
    path = save(sd, tmp_path / "mixed.safetensors")
    _same_weights(load_vae(path, dtype="fp32"), wan_vae_tiny)
    assert load_transformer(path, config=WAN_TINY_HEADS, dtype="fp32").config.num_layers == 2


def test_vae_variant_picks_latent_scaling(files):
    """CogVideoX-2B and -5B share VAE weights; the variant decides the scaling factor."""
    vae = load_vae(files["cog_vae"], config=COG_TINY_VAE, variant="cogvideox-2b", dtype="fp32")
    assert vae.config.scaling_factor == pytest.approx(1.15258426)


def test_fp8_scaled_file_is_dequantised(tmp_path, wan_tiny):
    """ComfyUI's fp8_scaled layout: each fp8 weight times its scale_weight, the marker and scales dropped."""
    from blade_ops.models import keymaps
    from tests.models.model_helpers import dequantised, fp8_scaled

    prefix = "model.diffusion_model."
    packed = fp8_scaled(keymaps.wan_transformer_to_original(wan_tiny.state_dict()), prefix)
    assert any(v.dtype == torch.float8_e4m3fn for v in packed.values())
    path = save(packed, tmp_path / "wan_tiny_fp8_scaled.safetensors")
    model = load_transformer(path, config=WAN_TINY_HEADS, dtype="fp32")
    expected = type(wan_tiny).from_config(wan_tiny.config).eval()
    expected.load_state_dict(keymaps.wan_transformer_to_diffusers(dequantised(packed, prefix)))
    _same_weights(model, expected)
    assert torch.equal(wan_forward(model), wan_forward(expected))
    assert (wan_forward(model) - wan_forward(wan_tiny)).abs().max() < 0.1  # fp8 rounding, not a different model


def test_quantization_metadata_repack_refused(tmp_path, files):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "wan_int8_convrot.safetensors"
    save_file(load_file(str(files["wan_comfy"])), str(path), metadata={"_quantization_metadata": "{}"})
    with pytest.raises(ValueError, match="_quantization_metadata .*Use the bf16, fp16 or fp8_scaled release"):
        load_transformer(path, config=WAN_TINY_HEADS)
