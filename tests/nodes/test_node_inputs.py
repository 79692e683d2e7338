"""Contract: every FLOAT input refuses NaN and infinities at the node that holds it, with that node's name and the
input's name in the message, before anything else runs; the loaders' messages name only the node's own inputs (no
Python arguments such as vae_path= or config=, no function names)."""

from __future__ import annotations

import inspect
import math
import re

import pytest
import torch
from safetensors.torch import save_file


def _float_inputs(pack):
    """(node id, display name, class, input name, options) of every FLOAT input of every node."""
    found = []
    for node, cls in sorted(pack.NODE_CLASS_MAPPINGS.items()):
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, item in spec.get(section, {}).items():
                if item[0] == "FLOAT":
                    found.append((node, pack.NODE_DISPLAY_NAME_MAPPINGS[node], cls, name, item[1]))
    return found


def test_the_float_inputs_are_found(pack):
    names = {(node, name) for node, _, _, name, _ in _float_inputs(pack)}
    assert {("BladeSampler", "guidance"), ("BladeLoraLoader", "strength"), ("BladeSaveVideo", "fps"),
            ("BladeASA", "max_ratio"), ("BladeNativeASA", "start_percent"), ("BladeNativeLoRA", "strength"),
            ("BladeSchedule", "shift")} <= names


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_float_inputs_are_refused_by_their_node(pack, bad):
    for node, display, cls, name, _ in _float_inputs(pack):
        function = getattr(cls(), cls.FUNCTION)
        required = [p.name for p in inspect.signature(function).parameters.values()
                    if p.default is inspect.Parameter.empty]
        args = {p: object() for p in required}  # the check comes first: no other input is looked at
        args[name] = bad
        with pytest.raises(ValueError) as err:
            function(**args)
        message = str(err.value)
        assert message.startswith(f"{display}: {name} is {bad}"), (node, message)
        assert f"set {name} to a finite number" in message, (node, message)


def test_out_of_range_float_is_refused_by_its_node(pack):
    for _node, display, cls, name, opts in _float_inputs(pack):
        function = getattr(cls(), cls.FUNCTION)
        required = [p.name for p in inspect.signature(function).parameters.values()
                    if p.default is inspect.Parameter.empty]
        args = {p: object() for p in required}
        args[name] = opts["max"] + 1
        with pytest.raises(ValueError, match=rf"^{re.escape(display)}: {name}=\S+ is out of range; set {name} to a "
                                             rf"number between {opts['min']:g} and {opts['max']:g}"):
            function(**args)


def test_nan_lora_strength_is_refused_by_the_lora_node(pack, models_dir):
    """Not by the sampler later: the LoRA node is where the user must change it."""
    from blade_tiny_files import LORA_NAMES, TINY_NAMES

    nodes = pack.NODE_CLASS_MAPPINGS
    (model,) = nodes["BladeModelLoader"]().load(str(models_dir / "diffusers" / TINY_NAMES["wan"]), "auto", "fp32")
    with pytest.raises(ValueError, match=r"^BLADE LoRA Loader: strength is nan"):
        nodes["BladeLoraLoader"]().patch(model, str(models_dir / "loras" / LORA_NAMES["wan"]), float("nan"))
    (patched,) = nodes["BladeLoraLoader"]().patch(model, str(models_dir / "loras" / LORA_NAMES["wan"]), 0.5)
    assert patched.loras[-1].strength == 0.5


@pytest.fixture(scope="module")
def single_files(tmp_path_factory):
    """A tiny Wan VAE and transformer as single files in the original (ComfyUI) key layout."""
    from blade_ops.models import keymaps
    from blade_ops.models.tiny import tiny_transformer, tiny_vae

    folder = tmp_path_factory.mktemp("node_single_files")
    vae = tiny_vae("wan", seed=5)
    files = {
        "vae": (keymaps.wan_vae_to_original(vae.state_dict(), vae.config.num_res_blocks), "wan_2.1_vae.safetensors"),
        "transformer": (keymaps.wan_transformer_to_original(tiny_transformer("wan", seed=3).state_dict()),
                        "wan_t2v_tiny.safetensors"),
    }
    out = {}
    for part, (tensors, name) in files.items():
        out[part] = folder / name
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out[part]))
    return out


def _only_own_inputs(message: str, cls) -> None:
    spec = cls.INPUT_TYPES()
    own = set(spec.get("required", {})) | set(spec.get("optional", {}))
    named = set(re.findall(r"\b([a-z_]+)=", message))
    assert named <= own, f"names {sorted(named - own)}, not inputs of the node: {message}"
    assert not re.search(r"\b\w+\(\)", message), f"names a Python function: {message}"


@pytest.mark.parametrize(
    "node, part, family, expected",
    [
        ("BladeVAELoader", "vae", "cogvideox", r"not a cogvideox vae\. Use a cogvideox file or set family to 'wan'"),
        ("BladeVAELoader", "transformer", "auto", "not a vae; load it with BLADE Model Loader instead"),
        ("BladeModelLoader", "vae", "auto", "not a transformer; load it with BLADE VAE Loader instead"),
        ("BladeModelLoader", "transformer", "auto", "cannot be inferred; load it from a diffusers folder in "
                                                    "models/diffusers"),
    ],
    ids=["vae-wrong-family", "vae-loader-given-transformer", "model-loader-given-vae", "unknown-config"],
)
def test_loader_messages_name_only_the_nodes_own_inputs(pack, single_files, node, part, family, expected):
    cls = pack.NODE_CLASS_MAPPINGS[node]
    with pytest.raises(ValueError) as err:
        cls().load(str(single_files[part]), family, "fp32")
    message = str(err.value)
    assert re.search(expected, message), message
    _only_own_inputs(message, cls)


def test_sampler_refuses_nan_guidance_before_sampling(pack, models_dir):
    """NaN guidance used to switch CFG off silently (NaN > 1 is false)."""
    from blade_pack.blade_ops.text import PromptEmbeds
    from blade_tiny_files import TINY_NAMES

    nodes = pack.NODE_CLASS_MAPPINGS
    folder = str(models_dir / "diffusers" / TINY_NAMES["wan"])
    (model,) = nodes["BladeModelLoader"]().load(folder, "auto", "fp32")
    embeds = PromptEmbeds(torch.zeros(1, 512, 32), torch.zeros(1, 512, 32))
    with pytest.raises(ValueError, match="^BLADE Sampler: guidance is nan"):
        nodes["BladeSampler"]().sample(model, embeds, 0, 2, float("nan"), "blade", 64, 64, 5)


def test_sampler_compile_is_an_optional_switch_that_defaults_off(pack):
    """Workflows saved before the switch existed (UI: one widget value fewer; API: no 'compile' input) still load and
    run eagerly: the input is optional, last among the widgets, off by default, and the function's default is off."""
    cls = pack.NODE_CLASS_MAPPINGS["BladeSampler"]
    spec = cls.INPUT_TYPES()
    kind, opts = spec["optional"]["compile"]
    assert kind == "BOOLEAN" and opts["default"] is False and opts["tooltip"]
    assert "compile" not in spec["required"] and list(spec["optional"])[-1] == "compile"
    assert not inspect.signature(cls.sample).parameters["compile"].default
