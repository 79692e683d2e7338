"""Contract: every bad input is a ValueError/FileNotFoundError that names the file, what was expected and what was
found; pickles are refused without being opened."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from blade_ops.models import detect_family, load_model_bundle, load_transformer, load_vae, resolve_dtype
from blade_ops.models.files import read_header
from blade_ops.models.tiny import tiny_transformer
from tests.models.model_helpers import WAN_TINY_HEADS, save


def test_missing_file_names_it_and_lists_neighbours(tmp_path, files):
    with pytest.raises(FileNotFoundError, match="not found") as err:
        load_transformer(files["wan_comfy"].parent / "wan2.1_t2v_1.3B_bf16.safetensors")
    assert "wan2.1_t2v_1.3B_bf16.safetensors" in str(err.value)
    assert "wan2.1_t2v_tiny_bf16.safetensors" in str(err.value)  # what is there instead


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickle_suffix_refused_without_unpickling(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps({"x": 1}))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must never be called"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("pickle.load must never be called"))
    with pytest.raises(ValueError, match="pickle checkpoint") as err:
        load_transformer(path)
    assert str(path) in str(err.value) and "safetensors" in str(err.value)


def test_pickle_renamed_to_safetensors_refused(tmp_path):
    path = tmp_path / "renamed.safetensors"
    torch.save({"blocks.0.self_attn.q.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="pickle checkpoint with a .safetensors name"):
        load_transformer(path)


def test_truncated_file_says_redownload(tmp_path, files):
    data = files["wan_comfy"].read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=r"truncated or corrupt.*Re-download") as err:
        load_transformer(path)
    assert str(path) in str(err.value)
    path.write_bytes(data[:5])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_header(path)
    path.write_bytes(data[:40])  # header cut in the middle
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_header(path)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("these are not weights, just a text file" * 10)
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_transformer(path)


def _foreign(tmp_path, name: str, keys: list[str]):
    return save({k: torch.zeros(2, 2) for k in keys}, tmp_path / name)


@pytest.mark.parametrize(
    ("keys", "looks_like"),
    [
        (["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"], "Flux"),
        (["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.transformer.x"], "Stable Diffusion"),
        (["conditioner.embedders.0.x", "model.diffusion_model.input_blocks.0.0.weight"], "Stable Diffusion XL"),
        (["diffusion_model.blocks.0.self_attn.q.lora_down.weight"], "LoRA"),
        (["encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"], "T5/UMT5 text encoder"),
    ],
)
def test_other_family_file_says_what_it_looks_like(tmp_path, keys, looks_like):
    path = _foreign(tmp_path, "other.safetensors", keys)
    with pytest.raises(ValueError, match="is not a Wan2.1 or CogVideoX transformer") as err:
        load_transformer(path)
    assert looks_like in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ValueError, match=looks_like):
        detect_family(path)


def test_cogvideox_file_given_to_wan_loader(files):
    with pytest.raises(ValueError, match=r"holds a CogVideoX transformer \(diffusers key layout\), not a wan"):
        load_transformer(files["cog_diffusers"], family="wan")


def test_wan_file_given_to_cogvideox_vae_loader(files):
    with pytest.raises(ValueError, match=r"holds a Wan2.1 vae .*not a cogvideox vae"):
        load_vae(files["wan_vae_original"], family="cogvideox")


def test_vae_file_given_to_transformer_loader(files):
    with pytest.raises(ValueError, match=r"holds a Wan2.1 vae .*not a transformer; load it with load_vae"):
        load_transformer(files["wan_vae_original"])


def test_unexpected_layout_lists_keys(tmp_path, files):
    from safetensors.torch import load_file

    sd = load_file(str(files["wan_original"]))
    del sd["blocks.1.cross_attn.k.weight"]
    sd["blocks.0.extra_adapter.weight"] = torch.zeros(3)
    sd["blocks.0.ffn.2.bias"] = torch.zeros(7)
    path = save(sd, tmp_path / "odd.safetensors")
    with pytest.raises(ValueError, match="unexpected layout") as err:
        load_transformer(path, config=WAN_TINY_HEADS)
    msg = str(err.value)
    assert "1 missing keys (e.g. blocks.1.attn2.to_k.weight)" in msg
    assert "1 unexpected keys (e.g. blocks.0.extra_adapter.weight)" in msg
    assert "blocks.0.ffn.net.2.bias: file (7,) vs model (24,)" in msg


def test_structural_key_missing(tmp_path, files):
    from safetensors.torch import load_file

    sd = load_file(str(files["wan_original"]))
    del sd["head.head.weight"]
    path = save(sd, tmp_path / "headless.safetensors")
    with pytest.raises(ValueError, match=r"lacks proj_out.weight \(needed for output channels\)"):
        load_transformer(path, config=WAN_TINY_HEADS)


def test_uninferable_head_count_asks_for_config(files):
    with pytest.raises(ValueError, match=r"head count cannot be inferred; pass config=.*H\*D = 24"):
        load_transformer(files["wan_original"])


def test_uninferable_vae_setting_asks_for_config(files):
    with pytest.raises(ValueError, match=r"cannot build AutoencoderKLCogVideoX .*norm_num_groups"):
        load_vae(files["cog_vae"])


def test_image_to_video_model_refused(tmp_path):
    from diffusers import WanTransformer3DModel

    from blade_ops.models import keymaps
    from blade_ops.models.tiny import tiny_transformer_config

    i2v = WanTransformer3DModel(**dict(tiny_transformer_config("wan"), in_channels=36, out_channels=16))
    path = save(keymaps.wan_transformer_to_original(i2v.state_dict()), tmp_path / "i2v.safetensors")
    with pytest.raises(ValueError, match="36 input channels; BLADE's text-to-video models take 16"):
        load_transformer(path, config=WAN_TINY_HEADS)


def test_wrong_variant_asserted(files):
    with pytest.raises(ValueError, match="variant 'cogvideox-5b' is a cogvideox model but .* is wan"):
        load_transformer(files["wan_original"], config=WAN_TINY_HEADS, variant="cogvideox-5b")
    with pytest.raises(ValueError, match="Unknown model variant 'wan-99b'; valid variants: wan2.1-t2v-1.3b"):
        load_transformer(files["wan_original"], config=WAN_TINY_HEADS, variant="wan-99b")


def test_folder_errors(tmp_path, tiny_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="neither model_index.json nor config.json"):
        load_transformer(empty)
    other = tmp_path / "flux"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ValueError, match="class 'FluxPipeline'; expected one of WanPipeline, CogVideoXPipeline"):
        load_model_bundle(other)
    pickles = tmp_path / "pickles"
    pickles.mkdir()
    (pickles / "config.json").write_text((tiny_folder("wan") / "transformer" / "config.json").read_text())
    (pickles / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(FileNotFoundError, match=r"only pickle weights \(diffusion_pytorch_model.bin\)"):
        load_transformer(pickles)
    with pytest.raises(ValueError, match="holds a wan model, not a cogvideox one"):
        load_model_bundle(tiny_folder("wan"), family="cogvideox")


def test_bad_arguments(files):
    with pytest.raises(ValueError, match="Unsupported dtype 'int8'; valid: auto, fp32, float32, bf16, bfloat16, fp16"):
        resolve_dtype("int8")
    with pytest.raises(ValueError, match="Unknown offload policy 'sequential'; valid policies: none, model"):
        load_model_bundle(files["wan_comfy"], offload="sequential")
    with pytest.raises(ValueError, match=r"Unknown model parts \['unet'\]"):
        load_model_bundle(files["wan_comfy"], parts=("unet",))
    with pytest.raises(ValueError, match="Unknown model family 'sd15'"):
        load_transformer(files["wan_comfy"], family="sd15")


@pytest.mark.parametrize("short, long", [("fp32", "float32"), ("bf16", "bfloat16"), ("fp16", "float16")])
def test_dtype_names_in_both_spellings(short, long):
    assert resolve_dtype(short) is resolve_dtype(long) is resolve_dtype(long.upper()) is getattr(torch, long)


def test_auto_dtype_and_device_follow_the_command_line(tiny_folder):
    """``device="auto"`` is CUDA when available, else the CPU; ``dtype="auto"`` (the default) is bf16 on CUDA and
    fp32 on the CPU, as ``python -m blade_ops.generate`` picks."""
    assert resolve_dtype("auto", "cpu") is torch.float32
    bundle = load_model_bundle(tiny_folder("wan"), parts=("transformer", "vae"), device="auto")
    cuda = torch.cuda.is_available()
    assert bundle.device == ("cuda" if cuda else "cpu")
    assert bundle.transformer.dtype == bundle.dtype == (torch.bfloat16 if cuda else torch.float32)


def test_single_file_bundle_without_text_encoder_source(files):
    with pytest.raises(ValueError, match="pass text_encoder_path="):
        load_model_bundle(files["wan_comfy"], parts=("transformer", "text_encoder"), config=WAN_TINY_HEADS)
    with pytest.raises(ValueError, match="Pass vae_path="):
        load_model_bundle(files["wan_comfy"], parts=("transformer", "vae"), config=WAN_TINY_HEADS)


def test_tiny_transformer_is_not_touched(wan_tiny):
    """Loading never mutates the source model the files were written from (fixtures are shared)."""
    ref = tiny_transformer("wan", seed=3)
    assert all(
        torch.equal(a, b) for a, b in zip(ref.state_dict().values(), wan_tiny.state_dict().values(), strict=True)
    )


def test_missing_bundle_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="Model path not found: .*nowhere"):
        load_model_bundle(tmp_path / "nowhere")
