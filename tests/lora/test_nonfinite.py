"""Contract: a LoRA holding NaN or Inf, in any naming (a NaN kohya ``.alpha`` included), is refused when read with a
message naming the tensors and counts; a merge that would leave a non-finite weight is refused before anything is
written, so the base weights stay exactly as they were."""

from __future__ import annotations

import json

import pytest
import torch
from lora_helpers import FORMATS, random_lora, write, write_diffusers
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from blade_ops.lora import LoRAFile, applied_loras, apply_lora, read_lora, remove_lora, set_lora_strength
from blade_ops.lora.formats import lora_from_state_dict
from blade_ops.models.tiny import tiny_transformer

BAD = {"nan": float("nan"), "inf": float("inf")}


def _poison(path, value: float, count: int = 3, key_end: str = ".weight") -> str:
    """Put ``count`` copies of ``value`` into the first tensor of ``path`` whose key ends in ``key_end``."""
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    key = next(k for k in tensors if k.endswith(key_end))
    flat = tensors[key].reshape(-1).clone()
    flat[:count] = value
    tensors[key] = flat.reshape(tensors[key].shape)
    save_file(tensors, str(path), metadata=metadata)
    return key


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_every_naming_refuses_non_finite_tensors(family, tmp_path, bad):
    model = tiny_transformer(family)
    lora = random_lora(model, family)
    for kind in FORMATS[family]:
        path = write(kind, tmp_path, lora, family)
        key = _poison(path, BAD[bad])
        with pytest.raises(ValueError) as err:
            read_lora(path)
        msg = str(err.value)
        label = "NaN" if bad == "nan" else "Inf"
        assert f"{path.name!r} is damaged" in msg, kind
        assert f"1 of {len(load_file(str(path)))} tensors hold NaN or Inf" in msg, kind
        assert f"{key} (3 {label} of" in msg, kind
        with pytest.raises(ValueError, match="is damaged"):
            apply_lora(model, path, merge=True)
        assert not applied_loras(model)


def test_kohya_nan_alpha_is_refused(tmp_path):
    model = tiny_transformer("wan")
    path = write("kohya", tmp_path, random_lora(model, "wan"), "wan")
    key = _poison(path, float("nan"), count=1, key_end=".alpha")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"is damaged: 1 of \d+ tensors.*{key} \(1 NaN of 1 values\)"):
        apply_lora(model, path, merge=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_nan_alpha_in_metadata_is_refused(tmp_path):
    path = write_diffusers(tmp_path / "meta.safetensors", random_lora(tiny_transformer("wan"), "wan"))
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={"lora_adapter_metadata": json.dumps({"transformer.lora_alpha": "nan"})})
    with pytest.raises(ValueError, match="non-finite alpha in its metadata"):
        read_lora(path)


def _with_values(lora: LoRAFile, value: float) -> LoRAFile:
    """The same LoRA with one B entry per module set to ``value``, built in memory (no file check on the way)."""
    state = {k: v.clone() for k, v in lora.state_dict.items()}
    for k in state:
        if k.endswith(".lora_B.weight"):
            state[k][0, 0] = value
    return LoRAFile(state_dict=state, alphas=dict(lora.alphas), info=lora.info)


@pytest.mark.parametrize("merge", [False, True], ids=["unmerged", "merged"])
def test_in_memory_lora_with_nan_is_refused_and_changes_nothing(tmp_path, merge):
    model = tiny_transformer("wan")
    good = read_lora(write_diffusers(tmp_path / "l.safetensors", random_lora(model, "wan")))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"LoRA 'l' is damaged: \d+ of \d+ tensors hold NaN or Inf"):
        apply_lora(model, _with_values(good, float("nan")), merge=merge)
    state = model.state_dict()
    assert state.keys() == before.keys() and all(torch.equal(before[k], v) for k, v in state.items())
    assert not applied_loras(model)


def test_merge_that_overflows_fp16_is_refused_and_remove_restores_exactly(tmp_path):
    model = tiny_transformer("wan")
    lora = read_lora(write_diffusers(tmp_path / "l.safetensors", random_lora(model, "wan")))
    model.to(torch.float16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    big = _with_values(lora, 60000.0)  # B @ A pushes some weights past fp16's 65504
    with pytest.raises(ValueError) as err:
        apply_lora(model, big, merge=True, strength=4.0)
    msg = str(err.value)
    assert "Merging LoRA 'l' at strength 4 would make the weights of" in msg and "torch.float16" in msg
    assert "nothing was changed" in msg and "Inf of" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not applied_loras(model)
    # a LoRA that fits is merged, and taking it out again gives back finite weights
    name = apply_lora(model, lora, merge=True, strength=0.5)
    with pytest.raises(ValueError, match="Re-weighting LoRA 'l' at strength"):
        set_lora_strength(model, name, 1e9)
    remove_lora(model, name)
    for k, v in model.state_dict().items():
        assert torch.isfinite(v).all(), k
        assert (v.float() - before[k].float()).abs().max() <= 2e-3, k  # fp16 rounding of w + d - d


def test_lora_from_state_dict_names_the_key_as_given(tmp_path):
    a = torch.zeros(2, 24)
    b = torch.full((24, 2), float("inf"))
    raw = {"transformer.blocks.0.attn1.to_q.lora_A.weight": a, "transformer.blocks.0.attn1.to_q.lora_B.weight": b}
    with pytest.raises(ValueError, match=r"LoRA state dict is damaged: 1 of 2 tensors.*"
                                         r"transformer\.blocks\.0\.attn1\.to_q\.lora_B\.weight \(48 Inf of 48"):
        lora_from_state_dict(raw)
