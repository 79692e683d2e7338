"""LoRA contract: every naming loads to the same effective weights, strength/merge/stack/remove are exact, and a
LoRA that does not fit, or a file that is not a complete safetensors LoRA, is refused with a message that says why.
"""

from __future__ import annotations

import re

import pytest
import torch
from lora_helpers import (
    EXPECTED_SOURCE,
    FORMATS,
    base_weights,
    effective_weight,
    model_inputs,
    random_lora,
    run,
    target_modules,
    write,
    write_diffusers,
    write_kohya,
)
from safetensors.torch import save_file

from blade_ops.lora import (
    applied_loras,
    apply_lora,
    disable_loras,
    enable_loras,
    lora_target_modules,
    merge_loras,
    read_lora,
    remove_lora,
    save_lora,
    set_lora_strength,
    student_lora_config,
    unmerge_loras,
)
from blade_ops.models.tiny import tiny_transformer


@pytest.fixture
def model(family):
    return tiny_transformer(family)


@pytest.fixture
def lora(model, family):
    return random_lora(model, family)


def expected_output(family, lora, scale=1.0):
    """Output of a fresh model whose weights got ``scale * delta`` by hand (the oracle)."""
    ref = tiny_transformer(family)
    with torch.no_grad():
        for name in lora.factors:
            ref.get_submodule(name).weight += scale * lora.delta(name)
    return run(ref, model_inputs(family))


def assert_deltas(model, lora, base, scale=1.0, atol=1e-5):
    for name in lora.factors:
        got = effective_weight(model, name) - base[name]
        torch.testing.assert_close(got, scale * lora.delta(name), atol=atol, rtol=1e-5, msg=name)


@pytest.mark.parametrize("merge", [False, True], ids=["unmerged", "merged"])
def test_every_naming_gives_the_same_weights_and_output(model, lora, family, tmp_path, merge):
    base = base_weights(model, list(lora.factors))
    want = expected_output(family, lora)
    for kind in FORMATS[family]:
        path = write(kind, tmp_path, lora, family)
        parsed = read_lora(path)
        assert parsed.info.source_format == EXPECTED_SOURCE[kind]
        assert parsed.info.family == family
        assert sorted(parsed.modules) == sorted(lora.factors)
        name = apply_lora(model, path, merge=merge)
        assert_deltas(model, lora, base)
        torch.testing.assert_close(run(model, model_inputs(family)), want, atol=1e-5, rtol=1e-5)
        remove_lora(model, name)


def test_alpha_defaults_to_rank_without_metadata(model, family, tmp_path):
    lora = random_lora(model, family, rank=3)
    lora.factors = {k: (a, b, 3.0) for k, (a, b, _) in lora.factors.items()}
    path = tmp_path / "plain.safetensors"
    save_file({f"transformer.{k}.lora_{ab}.weight": t for k, (a, b, _) in lora.factors.items()
               for ab, t in (("A", a), ("B", b))}, str(path))
    base = base_weights(model, list(lora.factors))
    apply_lora(model, path)
    assert_deltas(model, lora, base)
    assert read_lora(path).info.alpha is None


def test_merge_then_unmerge_restores_the_weights(model, lora, family, tmp_path):
    names = list(lora.factors)
    base = base_weights(model, names)
    untouched = {k: v.clone() for k, v in model.state_dict().items()}
    name = apply_lora(model, write_diffusers(tmp_path / "l.safetensors", lora), strength=1.7, merge=True)
    assert not any("lora" in k for k in model.state_dict())  # merged: no peft layers at all
    merged = run(model, model_inputs(family))
    unmerge_loras(model)
    for n in names:  # weights back to base within fp32 rounding, the LoRA now through peft
        assert (model.get_submodule(n).base_layer.weight - base[n]).abs().max() <= 1e-6
    assert_deltas(model, lora, base, scale=1.7)
    torch.testing.assert_close(run(model, model_inputs(family)), merged, atol=1e-5, rtol=1e-5)
    merge_loras(model)
    assert_deltas(model, lora, base, scale=1.7)
    remove_lora(model, name)
    state = model.state_dict()
    assert state.keys() == untouched.keys()
    for k, v in untouched.items():
        assert (state[k] - v).abs().max() <= 1e-6, k


@pytest.mark.parametrize("merge", [False, True], ids=["unmerged", "merged"])
def test_strength_zero_is_no_lora_and_strength_scales_the_delta(model, lora, family, tmp_path, merge):
    base = base_weights(model, list(lora.factors))
    reference = run(model, model_inputs(family))
    name = apply_lora(model, write_diffusers(tmp_path / "l.safetensors", lora), strength=0.0, merge=merge)
    assert torch.equal(run(model, model_inputs(family)), reference)
    for strength in (-1.0, 2.0, 0.5):
        set_lora_strength(model, name, strength)
        assert_deltas(model, lora, base, scale=strength, atol=2e-5)
    torch.testing.assert_close(run(model, model_inputs(family)), expected_output(family, lora, 0.5), atol=1e-5,
                               rtol=1e-5)
    with pytest.raises(ValueError, match="finite number"):
        set_lora_strength(model, name, float("nan"))


def test_disable_enable_switches_without_reloading(model, lora, family, tmp_path):
    reference = run(model, model_inputs(family))
    path = write_diffusers(tmp_path / "l.safetensors", lora)
    apply_lora(model, path, adapter_name="a")
    apply_lora(model, path, adapter_name="b", strength=-1.0, merge=True)  # a + b cancel out
    torch.testing.assert_close(run(model, model_inputs(family)), reference, atol=1e-5, rtol=1e-5)
    disable_loras(model, "b")
    with_a = run(model, model_inputs(family))
    torch.testing.assert_close(with_a, expected_output(family, lora), atol=1e-5, rtol=1e-5)
    disable_loras(model)
    torch.testing.assert_close(run(model, model_inputs(family)), reference, atol=1e-5, rtol=1e-5)
    enable_loras(model, ["a"])
    torch.testing.assert_close(run(model, model_inputs(family)), with_a, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("merge_second", [False, True], ids=["both-unmerged", "one-merged"])
def test_two_loras_stack_and_remove_restores_the_base_exactly(model, family, tmp_path, merge_second):
    first, second = random_lora(model, family, seed=1), random_lora(model, family, seed=2, rank=6)
    names = list(first.factors)
    base = base_weights(model, names)
    untouched = {k: v.clone() for k, v in model.state_dict().items()}
    reference = run(model, model_inputs(family))
    n1 = apply_lora(model, write_kohya(tmp_path / "one.safetensors", first, family), strength=0.5)
    n2 = apply_lora(model, write_diffusers(tmp_path / "two.safetensors", second), strength=2.0, merge=merge_second)
    assert (n1, n2) == ("one", "two") and set(applied_loras(model)) == {"one", "two"}
    for n in names:
        got = effective_weight(model, n) - base[n]
        torch.testing.assert_close(got, 0.5 * first.delta(n) + 2.0 * second.delta(n), atol=2e-5, rtol=1e-5)
    remove_lora(model, n1)
    assert_deltas(model, second, base, scale=2.0, atol=2e-5)
    remove_lora(model, n2)
    state = model.state_dict()
    assert state.keys() == untouched.keys()  # peft layers unwrapped again
    for k, v in untouched.items():
        if merge_second:
            assert (state[k] - v).abs().max() <= 1e-6, k
        else:
            assert torch.equal(state[k], v), k
    out = run(model, model_inputs(family))
    assert torch.equal(out, reference) if not merge_second else torch.allclose(out, reference, atol=1e-5)


def test_lora_applies_under_custom_attention_processors(model, lora, family, tmp_path):
    """ASA installs its own processors; they call attn.to_q(...) etc., so the LoRA must act through them."""

    class Counting:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def __call__(self, attn, *args, **kwargs):
            self.calls += 1
            return self.inner(attn, *args, **kwargs)

    installed = []
    for module in model.modules():
        if hasattr(module, "set_processor") and hasattr(module, "processor"):
            proc = Counting(module.processor)
            module.set_processor(proc)
            installed.append((module, proc))
    name = apply_lora(model, write_diffusers(tmp_path / "l.safetensors", lora))
    torch.testing.assert_close(run(model, model_inputs(family)), expected_output(family, lora), atol=1e-5,
                               rtol=1e-5)
    remove_lora(model, name)
    assert all(m.processor is p and p.calls > 0 for m, p in installed)


# ------------------------------------------------------------------------------------------------ refusals


def test_wrong_family_is_refused_and_names_the_family(tmp_path):
    wan, cog = tiny_transformer("wan"), tiny_transformer("cogvideox")
    cog_file = write_diffusers(tmp_path / "cog.safetensors", random_lora(cog, "cogvideox"))
    with pytest.raises(ValueError) as err:
        apply_lora(wan, cog_file)
    msg = str(err.value)
    assert "0 of 16 LoRA keys match" in msg and "looks like a CogVideoX LoRA" in msg
    assert "transformer_blocks.0.attn1.to_q.lora_A.weight" in msg
    wan_file = write_kohya(tmp_path / "wan.safetensors", random_lora(wan, "wan"), "wan")
    with pytest.raises(ValueError, match=r"0 of 40 LoRA keys match.*looks like a Wan LoRA"):
        apply_lora(cog, wan_file)
    assert not applied_loras(wan) and not any("lora" in k for k in wan.state_dict())


@pytest.mark.parametrize(
    "keys, label",
    [
        (["transformer.single_transformer_blocks.0.attn.to_q"], "Flux/HunyuanVideo"),
        (["lora_unet_down_blocks_0_attentions_0_proj_in"], "SDXL/SD1.5 (UNet)"),
    ],
)
def test_image_model_lora_is_refused_with_its_family(keys, label, tmp_path):
    tensors = {}
    for key in keys:
        tensors[f"{key}.lora_down.weight"] = torch.zeros(4, 64)
        tensors[f"{key}.lora_up.weight"] = torch.zeros(64, 4)
    path = tmp_path / "other.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=rf"0 of 2 LoRA keys match.*looks like an? {re.escape(label)} LoRA"):
        apply_lora(tiny_transformer("wan"), path)


def test_wrong_width_is_refused_with_rank_and_dims(tmp_path):
    wan = tiny_transformer("wan")
    big = random_lora(wan, "wan", rank=8, width=5120, modules=[n for n in target_modules(wan, "wan") if "attn" in n])
    with pytest.raises(ValueError) as err:
        apply_lora(wan, write_diffusers(tmp_path / "big.safetensors", big))
    msg = str(err.value)
    assert "0 of 32 LoRA keys match" in msg
    assert "rank-8 LoRA for dim 5120 (Wan 14B) given a dim-24 model (Wan)" in msg
    assert "[8, 5120] vs Linear(24->24)" in msg


def test_partial_match_is_never_accepted(tmp_path):
    wan = tiny_transformer("wan")
    lora = random_lora(wan, "wan", modules=["blocks.0.attn1.to_q", "blocks.1.attn1.to_q"])
    a, b, alpha = lora.factors["blocks.1.attn1.to_q"]
    lora.factors["blocks.5.attn1.to_q"] = (a.clone(), b.clone(), alpha)  # a deeper model's block
    path = write_diffusers(tmp_path / "deep.safetensors", lora)
    before = {k: v.clone() for k, v in wan.state_dict().items()}
    with pytest.raises(ValueError) as err:
        apply_lora(wan, path, merge=True)
    msg = str(err.value)
    assert "4 of 6 LoRA keys match" in msg and "blocks.5.attn1.to_q.lora_A.weight" in msg
    assert "blocks up to 5, the model only up to 1" in msg and "not applied" in msg
    assert all(torch.equal(before[k], v) for k, v in wan.state_dict().items()) and not applied_loras(wan)


def test_missing_pickled_truncated_and_non_lora_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        read_lora(tmp_path / "nope.safetensors")
    torch.save({"a": torch.zeros(2)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="only .safetensors"):
        read_lora(tmp_path / "evil.pt")
    (tmp_path / "evil.safetensors").write_bytes((tmp_path / "evil.pt").read_bytes())
    with pytest.raises(ValueError, match="pickled PyTorch checkpoint"):
        read_lora(tmp_path / "evil.safetensors")
    good = write_diffusers(tmp_path / "good.safetensors", random_lora(tiny_transformer("wan"), "wan"))
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        read_lora(tmp_path / "cut.safetensors")
    (tmp_path / "text.safetensors").write_bytes(b"hello world, not a tensor file")
    with pytest.raises(ValueError, match="not a safetensors file|truncated"):
        read_lora(tmp_path / "text.safetensors")
    save_file({"blocks.0.attn1.to_q.weight": torch.zeros(4, 4)}, str(tmp_path / "full.safetensors"))
    with pytest.raises(ValueError, match="no LoRA tensors"):
        read_lora(tmp_path / "full.safetensors")


def test_bad_adapter_name_and_strength(model, lora, tmp_path):
    path = write_diffusers(tmp_path / "l.safetensors", lora)
    apply_lora(model, path, adapter_name="x")
    with pytest.raises(ValueError, match="'x' is already in use"):
        apply_lora(model, path, adapter_name="x")
    with pytest.raises(ValueError, match="may use only"):
        apply_lora(model, path, adapter_name="a.b")
    with pytest.raises(ValueError, match="finite number"):
        apply_lora(model, path, strength=float("inf"))
    with pytest.raises(ValueError, match="No LoRA named 'y'.*'x'"):
        remove_lora(model, "y")
    assert apply_lora(model, path) == "l" and apply_lora(model, path) == "l_2"


# ------------------------------------------------------------------------------------------------ export, targets


def test_save_lora_round_trip_with_metadata_and_stock_diffusers_loader(model, family, tmp_path):
    lora = random_lora(model, family, rank=4)
    state = {}
    for name, (a, b, _) in lora.factors.items():
        state[f"{name}.lora_A.default.weight"] = a  # as peft.get_peft_model_state_dict returns before renaming
        state[f"{name}.lora_B.default.weight"] = b
    asa = {"tau": 0.95, "min_ratio": 0.05, "max_ratio": 0.17}
    path = save_lora(tmp_path / "pytorch_lora_weights.safetensors", state,
                     {"base_model": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "alpha": 2.0, "steps": 8, "asa": asa})
    parsed = read_lora(path)
    info = parsed.info
    assert (info.source_format, info.rank, info.alpha, info.steps, info.asa) == ("diffusers", 4, 2.0, 8, asa)
    assert info.base_model == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" and info.num_modules == len(lora.factors)
    prefix = "transformer.blocks." if family == "wan" else "transformer.transformer_blocks."
    assert all(k.startswith(prefix) for k in parsed.raw_keys)
    # diffusers' own pipeline loader reads the same alpha from the adapter metadata we wrote
    from diffusers.loaders import CogVideoXLoraLoaderMixin, WanLoraLoaderMixin

    mixin = WanLoraLoaderMixin if family == "wan" else CogVideoXLoraLoaderMixin
    stock_state, stock_meta = mixin.lora_state_dict(str(path), return_lora_metadata=True)
    stock = tiny_transformer(family)
    base = base_weights(stock, list(lora.factors))
    stock.load_lora_adapter(stock_state, prefix="transformer", metadata=stock_meta, adapter_name="stock")
    for name, (a, b, _) in lora.factors.items():
        torch.testing.assert_close(effective_weight(stock, name) - base[name], (b @ a) * 0.5, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_lora(tmp_path / "x.pt", state)


def test_student_targets_cover_every_attention_projection(family):
    from peft import inject_adapter_in_model

    assert lora_target_modules(family) == ["to_q", "to_k", "to_v", "to_out.0"]
    model = tiny_transformer(family)
    config = student_lora_config(family, rank=2, alpha=2)
    inject_adapter_in_model(config, model)
    wrapped = {n for n, m in model.named_modules() if hasattr(m, "lora_A")}
    per_block = 8 if family == "wan" else 4  # Wan: attn1 + attn2; CogVideoX: one joint attention
    assert len(wrapped) == per_block * model.config.num_layers  # 1.3B: 8 x 30 = 240; CogVideoX-5B: 4 x 42 = 168
    with pytest.raises(ValueError, match="valid families"):
        lora_target_modules("flux")


def test_blade_lora_is_known_by_its_metadata_or_its_released_naming(tmp_path):
    """BLADE's LoRAs (few steps, no CFG) are told apart from others, so a run off their schedule can warn."""
    wan = tiny_transformer("wan")
    attention = [n for n in target_modules(wan, "wan") if ".attn" in n]
    released = read_lora(write_diffusers(tmp_path / "released.safetensors",
                                         random_lora(wan, "wan", rank=64, modules=attention)))
    assert released.info.blade and released.info.distilled_steps == 8
    other_rank = read_lora(write_diffusers(tmp_path / "r4.safetensors", random_lora(wan, "wan", modules=attention)))
    with_ffn = read_lora(write_diffusers(tmp_path / "ffn.safetensors", random_lora(wan, "wan", rank=64)))
    kohya = read_lora(write_kohya(tmp_path / "kohya.safetensors", random_lora(wan, "wan", rank=64, modules=attention),
                                  "wan"))
    assert not (other_rank.info.blade or with_ffn.info.blade or kohya.info.blade)
    assert other_rank.info.distilled_steps is None
    state = {f"{m}.lora_{ab}.weight": t for m, (a, b, _) in random_lora(wan, "wan", modules=attention).factors.items()
             for ab, t in (("A", a), ("B", b))}
    distilled = read_lora(save_lora(tmp_path / "four.safetensors", state, {"steps": 4}))
    assert distilled.info.blade and distilled.info.distilled_steps == 4


def test_header_length_starting_with_the_pickle_byte_is_read(tmp_path):
    """A safetensors header 128 + 256k bytes long starts with 0x80, pickle's first byte: still a LoRA file."""
    from safetensors.torch import load_file

    source = write_diffusers(tmp_path / "source.safetensors", random_lora(tiny_transformer("wan"), "wan"))
    tensors = load_file(str(source))
    for pad in range(256):
        path = tmp_path / "padded.safetensors"
        save_file(tensors, str(path), metadata={"pad": "a" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert read_lora(path).modules == read_lora(source).modules
