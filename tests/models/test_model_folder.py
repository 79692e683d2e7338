"""Contract: a diffusers folder (whole pipeline or one part's folder) loads into a ModelBundle / module equal to
the models it was saved from, with the family read from model_index.json or config.json."""

from __future__ import annotations

import pytest
import torch

from blade_ops.models import (
    detect_family,
    detect_variant,
    load_model_bundle,
    load_text_encoder,
    load_transformer,
    load_vae,
)
from blade_ops.models.tiny import tiny_components
from tests.models.model_helpers import cog_forward, wan_forward


def test_folder_to_bundle(family, tiny_folder):
    folder = tiny_folder(family)
    bundle = load_model_bundle(folder, dtype=torch.float32)
    ref = tiny_components(family, seed=0)  # the folder fixture saves seed 0
    assert bundle.family.name == family
    assert type(bundle.transformer) is type(ref["transformer"])
    assert type(bundle.vae) is type(ref["vae"])
    assert type(bundle.text_encoder) is type(ref["text_encoder"])
    assert bundle.tokenizer("a red ball").input_ids == ref["tokenizer"]("a red ball").input_ids
    assert bundle.scheduler_config["_class_name"] == type(ref["scheduler"]).__name__
    assert set(bundle.sources) == {"transformer", "vae", "text_encoder", "scheduler"}
    assert bundle.variant is None  # tiny widths match no shipped variant
    for k, v in ref["transformer"].state_dict().items():
        assert torch.equal(bundle.transformer.state_dict()[k], v), k
    # Same weights; diffusers may leave them at unaligned addresses, which changes CPU rounding by ~1e-7.
    forward = wan_forward if family == "wan" else cog_forward
    torch.testing.assert_close(forward(bundle.transformer), forward(ref["transformer"]), atol=1e-5, rtol=1e-5)
    ids = ref["tokenizer"]("a red ball", return_tensors="pt").input_ids
    with torch.no_grad():
        got, want = bundle.text_encoder(ids).last_hidden_state, ref["text_encoder"](ids).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_part_subfolders_and_detection(family, tiny_folder):
    folder = tiny_folder(family)
    assert detect_family(folder) == family
    assert detect_family(folder / "transformer") == family
    assert detect_family(folder / "vae") == family
    t = load_transformer(folder / "transformer", dtype="bf16")
    assert t.config.num_layers == 2 and t.dtype == torch.bfloat16
    assert detect_variant(folder / "transformer") is None
    vae = load_vae(folder / "vae", dtype="fp32")
    assert vae.dtype == torch.float32
    encoder, tokenizer = load_text_encoder(folder / "text_encoder", dtype="fp32")
    assert tokenizer.pad_token_id == 0 and encoder.dtype == torch.float32


def test_parts_subset(tiny_folder):
    bundle = load_model_bundle(tiny_folder("cogvideox"), parts=("vae",), dtype="fp32")
    assert bundle.vae is not None
    assert bundle.transformer is None and bundle.text_encoder is None and bundle.tokenizer is None
    with pytest.raises(ValueError, match="missing transformer"):
        bundle.require("transformer")


def test_config_override_refused_for_folders(tiny_folder):
    with pytest.raises(ValueError, match="config= applies to single files"):
        load_transformer(tiny_folder("wan"), config={"num_layers": 3})
