"""Contract: a model file or diffusers folder whose tensors hold NaN or Inf is refused when read, with a message that
names the file, the tensors (first few) and the counts and says the file is damaged."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from blade_ops.finite import SHOWN, NonFiniteWeightsError, find_nonfinite, is_finite
from blade_ops.models import load_model_bundle, load_transformer, load_vae
from blade_ops.models.text_encoder_file import load_text_encoder_file
from blade_ops.models.tiny import tiny_text_encoder
from tests.models.model_helpers import COG_TINY_VAE, WAN_TINY_HEADS


def poison(src, dst, values: dict[int, float]) -> list[str]:
    """Copy ``src`` to ``dst`` with value ``v`` written into 2 entries of the ``i``-th floating tensor for each
    ``i: v``; return the keys changed, in that order."""
    tensors = load_file(str(src))
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata()
    floating = [k for k, t in tensors.items() if t.is_floating_point() and t.numel() >= 2]
    changed = []
    for i, value in values.items():
        key = floating[i]
        flat = tensors[key].reshape(-1).clone()
        flat[:2] = value
        tensors[key] = flat.reshape(tensors[key].shape)
        changed.append(key)
    save_file(tensors, str(dst), metadata=metadata)
    return changed


def assert_names(err: pytest.ExceptionInfo, where: str, keys: list[str], total: int) -> None:
    msg = str(err.value)
    assert isinstance(err.value, NonFiniteWeightsError) and isinstance(err.value, ValueError)
    assert where in msg and "is damaged" in msg and "re-download" in msg
    assert f"{len(keys)} of {total} tensors hold NaN or Inf values" in msg
    for key in keys[:SHOWN]:
        assert key in msg
    if len(keys) > SHOWN:
        assert f"and {len(keys) - SHOWN} more" in msg


@pytest.mark.parametrize(
    "layout, loader",
    [
        ("wan_comfy", lambda p: load_transformer(p, config=WAN_TINY_HEADS, dtype="fp32")),
        ("wan_vae_original", lambda p: load_vae(p, dtype="fp32")),
        ("cog_sat", lambda p: load_transformer(p, dtype="fp32")),
        ("cog_vae", lambda p: load_vae(p, config=COG_TINY_VAE, dtype="fp32")),
    ],
)
def test_single_files_with_nan_or_inf_are_refused(files, tmp_path, layout, loader):
    path = tmp_path / files[layout].name
    keys = poison(files[layout], path, {0: float("nan"), 3: float("inf"), 5: -float("inf")})
    with pytest.raises(NonFiniteWeightsError) as err:
        loader(path)
    assert_names(err, str(path), keys, len(load_file(str(path))))
    msg = str(err.value)
    assert f"{keys[0]} (2 NaN of" in msg and f"{keys[1]} (2 Inf of" in msg


def test_many_bad_tensors_are_counted_not_all_named(files, tmp_path):
    path = tmp_path / "many.safetensors"
    keys = poison(files["wan_comfy"], path, {i: float("nan") for i in range(SHOWN + 3)})
    with pytest.raises(NonFiniteWeightsError) as err:
        load_transformer(path, config=WAN_TINY_HEADS)
    assert_names(err, str(path), keys, len(load_file(str(path))))
    assert keys[SHOWN] not in str(err.value)


def test_text_encoder_file_with_nan_is_refused(tiny_folder, tmp_path):
    shutil.copytree(tiny_folder("wan") / "tokenizer", tmp_path / "tokenizer")  # found beside the file
    encoder = tiny_text_encoder("wan", vocab_size=32, seed=1)
    src = tmp_path / "src.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items() if k != "encoder.embed_tokens.weight"},
              str(src))
    path = tmp_path / "umt5_tiny.safetensors"
    keys = poison(src, path, {1: float("nan")})
    with pytest.raises(NonFiniteWeightsError) as err:
        load_text_encoder_file(path, dtype=torch.float32)
    assert_names(err, str(path), keys, len(load_file(str(path))))


@pytest.mark.parametrize("part", ["transformer", "vae", "text_encoder"])
def test_diffusers_folder_with_nan_is_refused(tiny_folder, tmp_path, part):
    folder = tmp_path / "model"
    shutil.copytree(tiny_folder("wan"), folder)
    weights = next((folder / part).glob("*.safetensors"))
    poison(weights, weights, {2: float("nan")})
    with pytest.raises(NonFiniteWeightsError) as err:
        load_model_bundle(folder)
    msg = str(err.value)
    assert f"The {part} folder {folder / part} is damaged: 1 of" in msg and "(2 NaN of" in msg


def test_the_check_is_one_cheap_pass_and_exact():
    assert is_finite(torch.zeros(3)) and is_finite(torch.zeros(0)) and is_finite(torch.arange(3))
    x = torch.randn(1000, dtype=torch.bfloat16)
    x[7], x[9], x[11] = float("nan"), float("inf"), -float("inf")
    assert not is_finite(x)
    (bad,) = find_nonfinite({"x": x, "y": torch.ones(4)})
    assert (bad.name, bad.nan, bad.inf, bad.numel) == ("x", 1, 2, 1000)
    fp8 = torch.tensor([1.0, float("nan")]).to(torch.float8_e4m3fn)  # no min/max kernel for float8: upcast
    assert not is_finite(fp8) and is_finite(torch.ones(3).to(torch.float8_e4m3fn))
