"""Every node class meets ComfyUI's classic node contract, checked without ComfyUI installed."""

from __future__ import annotations

import inspect
import sys

import pytest


def _node_items(pack):
    return sorted(pack.NODE_CLASS_MAPPINGS.items())


def _inputs(cls):
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, item in spec.get(section, {}).items():
            yield section, name, item


def test_pack_registers_nodes_without_importing_comfyui(pack):
    assert len(pack.NODE_CLASS_MAPPINGS) >= 10
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(pack.NODE_CLASS_MAPPINGS)
    assert not {"comfy", "folder_paths", "comfy.model_management"} & set(sys.modules)


def test_node_class_attributes(pack):
    for name, cls in _node_items(pack):
        assert cls.CATEGORY == "BLADE", name
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40, name
        assert isinstance(cls.RETURN_TYPES, tuple), name
        names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
        assert isinstance(names, tuple) and len(names) == len(cls.RETURN_TYPES), name
        if cls.RETURN_TYPES:
            assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES), name
        else:
            assert getattr(cls, "OUTPUT_NODE", False), f"{name} returns nothing, so it must be an output node"
        assert callable(getattr(cls(), cls.FUNCTION)), name


def test_input_specs(pack):
    for node, cls in _node_items(pack):
        spec = cls.INPUT_TYPES()
        assert isinstance(spec, dict) and isinstance(spec.get("required"), dict), node
        assert set(spec) <= {"required", "optional", "hidden"}, node
        for _, name, item in _inputs(cls):
            where = f"{node}.{name}"
            assert isinstance(item, tuple) and 1 <= len(item) <= 2, where
            kind, opts = item[0], item[1] if len(item) == 2 else {}
            assert isinstance(opts, dict), where
            assert opts.get("tooltip"), f"{where} has no tooltip"
            if isinstance(kind, list):
                if "default" in opts and kind:
                    assert opts["default"] in kind, where
                continue
            assert isinstance(kind, str) and kind, where
            if kind in ("INT", "FLOAT"):
                for key in ("default", "min", "max", "step"):
                    assert key in opts, f"{where} lacks {key}"
                assert opts["min"] <= opts["default"] <= opts["max"], where
                if kind == "INT":
                    assert all(isinstance(opts[k], int) for k in ("default", "min", "max", "step")), where
            elif kind in ("STRING", "BOOLEAN"):
                assert "default" in opts, where


def test_function_signature_takes_every_input(pack):
    for node, cls in _node_items(pack):
        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional", "hidden"):
            for name in spec.get(section, {}):
                assert name in params, f"{node}.{cls.FUNCTION} does not take {name!r}"
        for name in spec.get("optional", {}):
            assert params[name].default is None, f"optional {node}.{name} needs a None default"


def test_seed_has_control_after_generate(pack):
    seed = pack.NODE_CLASS_MAPPINGS["BladeSampler"].INPUT_TYPES()["required"]["seed"]
    assert seed[1]["control_after_generate"] is True
    assert seed[1]["max"] == 0xFFFFFFFFFFFFFFFF


def test_sampler_defaults_are_blade(pack):
    req = pack.NODE_CLASS_MAPPINGS["BladeSampler"].INPUT_TYPES()["required"]
    assert req["steps"][1]["default"] == 8
    assert req["guidance"][1]["default"] == 1.0
    assert req["scheduler"][0] == ["blade", "tdm", "baseline"]


@pytest.mark.parametrize("name", ["BladeASA", "BladeLoraLoader"])
def test_patch_nodes_return_blade_model(pack, name):
    cls = pack.NODE_CLASS_MAPPINGS[name]
    assert cls.RETURN_TYPES == ("BLADE_MODEL",)
    assert cls.INPUT_TYPES()["required"]["model"][0] == "BLADE_MODEL"
