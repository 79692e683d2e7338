"""Contract: the shipped configs build the released architectures, and full-size files (in every layout) are
recognised as the right variant from their header alone. Full-size files here are sparse: a real header, zero
bytes behind it, no disk used; nothing is loaded."""

from __future__ import annotations

import pytest
from diffusers import (
    AutoencoderKLCogVideoX,
    AutoencoderKLWan,
    CogVideoXTransformer3DModel,
    WanTransformer3DModel,
)
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from blade_ops.models import available_variants, detect_family, detect_variant, keymaps, shipped_config
from blade_ops.models.variants import match_variant, structure_from_config, structure_from_shapes
from tests.models.model_helpers import meta_state_shapes, meta_tensors, write_header_only

CLASSES = {
    ("wan", "transformer"): WanTransformer3DModel,
    ("wan", "vae"): AutoencoderKLWan,
    ("cogvideox", "transformer"): CogVideoXTransformer3DModel,
    ("cogvideox", "vae"): AutoencoderKLCogVideoX,
}
FACTS = {  # REFERENCE.md / model cards: width, depth, heads x head size
    "wan2.1-t2v-1.3b": (1536, 30, 12, 128),
    "wan2.1-t2v-14b": (5120, 40, 40, 128),
    "cogvideox-2b": (1920, 30, 30, 64),
    "cogvideox-5b": (3072, 42, 48, 64),
}


@pytest.fixture(scope="module")
def full_shapes():
    """State-dict shapes of every shipped part, from models built without weights."""
    out = {}
    for name in available_variants():
        family = "wan" if name.startswith("wan") else "cogvideox"
        for part in ("transformer", "vae"):
            out[name, part] = meta_state_shapes(CLASSES[family, part], shipped_config(name, part))
    return out


@pytest.mark.parametrize("name", list(FACTS))
def test_shipped_configs_have_the_published_geometry(name, full_shapes):
    width, depth, heads, head_dim = FACTS[name]
    cfg = shipped_config(name, "transformer")
    assert (cfg["num_layers"], cfg["num_attention_heads"], cfg["attention_head_dim"]) == (depth, heads, head_dim)
    family = "wan" if name.startswith("wan") else "cogvideox"
    structure = structure_from_shapes(family, "transformer", full_shapes[name, "transformer"])
    assert structure == structure_from_config(family, "transformer", cfg)
    assert match_variant(family, "transformer", structure) == [name]
    key = "patch_embedding.weight" if family == "wan" else "patch_embed.proj.weight"
    assert full_shapes[name, "transformer"][key][0] == width
    assert cfg["in_channels"] == 16 and (cfg["ffn_dim"] if family == "wan" else 0) in (8960, 13824, 0)


def test_cogvideox_variants_differ_where_it_matters():
    assert not shipped_config("cogvideox-2b", "transformer")["use_rotary_positional_embeddings"]
    assert shipped_config("cogvideox-5b", "transformer")["use_rotary_positional_embeddings"]
    assert shipped_config("cogvideox-2b", "vae")["scaling_factor"] == pytest.approx(1.15258426)
    assert shipped_config("cogvideox-5b", "vae")["scaling_factor"] == pytest.approx(0.7)


@pytest.mark.parametrize("name", list(FACTS))
@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_full_size_file_detected_from_header(tmp_path, full_shapes, name, layout):
    family = "wan" if name.startswith("wan") else "cogvideox"
    shapes = full_shapes[name, "transformer"]
    if layout == "original":  # Wan: ComfyUI repackaged layout; CogVideoX: SAT release
        if family == "wan":
            shapes = {keymaps.wan_transformer_key_to_original(k): s for k, s in shapes.items()}
            shapes = {"model.diffusion_model." + k: s for k, s in shapes.items()}
        else:
            sat = keymaps.cogvideox_diffusers_to_sat(meta_tensors(shapes))
            shapes = {"model.diffusion_model." + k: tuple(v.shape) for k, v in sat.items()}
    path = write_header_only(shapes, tmp_path / f"{name}.safetensors")
    assert detect_family(path) == family
    assert detect_variant(path) == name


def test_full_size_wan_vae_layout_agrees_with_diffusers_converter(tmp_path, full_shapes):
    """Our general VAE key map and diffusers' (2-res-block) converter agree on the released VAE."""
    shapes = full_shapes["wan2.1-t2v-1.3b", "vae"]
    original = {keymaps.wan_vae_key_to_original(k, 2): s for k, s in shapes.items()}
    assert set(convert_wan_vae_to_diffusers(original)) == set(shapes)
    assert {keymaps.wan_vae_key_to_diffusers(k, 2) for k in original} == set(shapes)
    assert keymaps.wan_vae_num_res_blocks(original) == 2
    path = write_header_only(original, tmp_path / "wan_2.1_vae.safetensors")
    assert detect_variant(path, part="vae") == "wan2.1-t2v-1.3b"  # both Wan variants share this VAE


def test_available_variants_lists_every_shipped_model():
    assert set(available_variants()) == set(FACTS) | {"wan2.2-ti2v-5b", "wan2.2-t2v-a14b"}


def test_asserted_variant_must_fit_a_full_size_file(tmp_path, full_shapes):
    from blade_ops.models import load_transformer

    path = write_header_only(full_shapes["cogvideox-2b", "transformer"], tmp_path / "cogvideox_2b.safetensors")
    with pytest.raises(ValueError, match="does not have the shapes of variant 'cogvideox-5b'.*matches cogvideox-2b"):
        load_transformer(path, variant="cogvideox-5b")
