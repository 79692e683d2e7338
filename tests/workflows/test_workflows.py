"""The committed workflows are what the build script generates, load as valid graphs, and run end to end.

The structure checks stand in for the ComfyUI frontend (node types registered, link types matching, widget counts
as the frontend derives them from INPUT_TYPES); the run checks execute each API workflow through the node classes
on tiny models, the way ComfyUI's executor would, and look at the mp4 it writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
API_DIR = WORKFLOWS / "api"

UI_FILES = sorted(p.name for p in WORKFLOWS.glob("*.json"))
API_FILES = sorted(p.name for p in API_DIR.glob("*.api.json"))
NATIVE = {"wan_native_blade_8step", "wan_native_baseline_50step", "wan14b_native_asa_fp8", "wan22_5b_native_asa"}
# Workflows made only of the pack's nodes run here through the node classes; the others need a ComfyUI server
# (tests/comfyui/test_server.py runs them there).
PACK_ONLY_API_FILES = [n for n in API_FILES if n.removesuffix(".api.json") not in NATIVE]


def test_every_family_and_mode_is_there():
    stems = {n.removesuffix(".json") for n in UI_FILES}
    assert {"wan_blade_8step", "wan_baseline_50step", "cogvideox_blade_8step", "cogvideox_baseline_50step"} <= stems
    assert NATIVE <= stems
    assert {n.removesuffix(".api.json") for n in API_FILES} == stems


def test_only_ui_workflows_are_templates():
    """ComfyUI lists every .json directly in workflows/ as a template: an API file there empties the canvas."""
    for name in UI_FILES:
        assert json.loads((WORKFLOWS / name).read_text()).get("version") == 0.4, name
    assert not list(WORKFLOWS.glob("*.api.json"))


def test_committed_json_matches_the_script(workflow_builder):
    built = workflow_builder.build_all()
    assert sorted(built) == sorted(UI_FILES + [f"api/{n}" for n in API_FILES])
    for name, obj in built.items():
        assert (WORKFLOWS / name).read_text() == workflow_builder.dumps(obj), f"{name} is stale: run the build script"


def _signature(builder, class_type: str) -> dict:
    return builder.node_signature(class_type)


@pytest.mark.parametrize("name", UI_FILES)
def test_nodes_do_not_overlap_and_the_note_is_first_in_view(workflow_builder, name):
    wf = json.loads((WORKFLOWS / name).read_text())
    title = workflow_builder.TITLE_H
    boxes = [(n["id"], n["pos"][0], n["pos"][1] - title, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in wf["nodes"]]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            apart = a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]
            assert apart, f"{name}: nodes {a[0]} and {b[0]} overlap"
    note = next(n for n in wf["nodes"] if n["type"] == "Note")
    scale = wf["extra"]["ds"]["scale"]
    offset = wf["extra"]["ds"]["offset"]
    left, top = (note["pos"][0] + offset[0]) * scale, (note["pos"][1] - title + offset[1]) * scale
    assert 0 <= left < 100 and 0 <= top < 100, "the Note must open in the top-left corner of the canvas"


@pytest.mark.parametrize("name", UI_FILES)
def test_ui_workflow_is_a_valid_graph(pack, workflow_builder, name):
    wf = json.loads((WORKFLOWS / name).read_text())
    assert wf["version"] == 0.4
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]) and wf["last_node_id"] == max(nodes)
    links = {link[0]: link for link in wf["links"]}
    assert wf["last_link_id"] == max(links)
    notes = [n["widgets_values"][0] for n in nodes.values() if n["type"] == "Note"]
    assert notes and all("models/" in t and "diffusers/" in t for t in notes)
    for node in nodes.values():
        core = workflow_builder.CORE_NODES
        assert node["type"] in pack.NODE_CLASS_MAPPINGS or node["type"] in core, node["type"]
        sig = _signature(workflow_builder, node["type"])
        assert len(node["widgets_values"]) == len(sig["widgets"]), node["type"]
        assert [(i["name"], i["type"]) for i in node["inputs"]] == [tuple(x) for x in sig["inputs"]]
        assert [(o["name"], o["type"]) for o in node["outputs"]] == [tuple(x) for x in sig["outputs"]]
        assert len(node["pos"]) == 2 and len(node["size"]) == 2
        if "control_after_generate" in sig["widgets"]:
            assert node["widgets_values"][sig["widgets"].index("control_after_generate")] in ("fixed", "randomize")
        for widget, value in zip(sig["widgets"], node["widgets_values"], strict=True):
            if widget == "control_after_generate" or node["type"] in core:
                continue
            spec = pack.NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()
            item = {**spec["required"], **spec.get("optional", {})}[widget]
            opts = item[1]
            if item[0] in ("INT", "FLOAT"):
                assert opts["min"] <= value <= opts["max"], (node["type"], widget, value)
            elif isinstance(item[0], list) and node["type"] not in ("BladeModelLoader", "BladeVAELoader",
                                                                      "BladeTextEncoderLoader", "BladeLoraLoader",
                                                                      "BladeNativeLoRA"):
                assert value in item[0], (node["type"], widget, value)
        for slot, inp in enumerate(node["inputs"]):
            if inp["link"] is None:
                continue
            link = links[inp["link"]]
            assert link[3] == node["id"] and link[4] == slot
            src = nodes[link[1]]
            assert src["outputs"][link[2]]["type"] == inp["type"] == link[5]
            assert inp["link"] in src["outputs"][link[2]]["links"]
    for link_id, src, src_slot, dst, dst_slot, _ in wf["links"]:
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
    for node in nodes.values():
        if node["type"] in workflow_builder.CORE_NODES:
            optional = {i for t, i in workflow_builder.OPTIONAL_CORE_INPUTS if t == node["type"]}
            unlinked = [i["name"] for i in node["inputs"] if i["link"] is None and i["name"] not in optional]
        else:
            required = pack.NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()["required"]
            unlinked = [i["name"] for i in node["inputs"] if i["link"] is None and i["name"] in required]
        assert not unlinked, (node["type"], unlinked)


@pytest.mark.parametrize("name", API_FILES)
def test_api_workflow_matches_its_ui_twin(pack, workflow_builder, name):
    api = json.loads((API_DIR / name).read_text())
    ui = json.loads((WORKFLOWS / name.replace(".api.json", ".json")).read_text())
    ui_nodes = {str(n["id"]): n for n in ui["nodes"] if n["type"] not in ("Note",)}
    assert set(api) == set(ui_nodes)
    for node_id, node in api.items():
        assert node["class_type"] == ui_nodes[node_id]["type"]
        sig = workflow_builder.node_signature(node["class_type"])
        names = [w for w in sig["widgets"] if w != "control_after_generate"] + [i for i, _ in sig["inputs"]]
        optional = {i for t, i in workflow_builder.OPTIONAL_CORE_INPUTS if t == node["class_type"]}
        if node["class_type"] in pack.NODE_CLASS_MAPPINGS:
            optional |= set(pack.NODE_CLASS_MAPPINGS[node["class_type"]].INPUT_TYPES().get("optional", {}))
        missing = [k for k in names if k not in node["inputs"] and k not in optional]
        assert not missing, (node["class_type"], missing)
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert value[0] in api and isinstance(value[1], int)


def run_api_workflow(pack, api: dict, extra_pnginfo: dict | None = None) -> dict[str, object]:
    """Execute an API-format workflow through the node classes, in dependency order; returns each node's result."""
    results: dict[str, object] = {}

    def run(node_id: str):
        if node_id in results:
            return results[node_id]
        node = api[node_id]
        cls = pack.NODE_CLASS_MAPPINGS[node["class_type"]]
        kwargs = {}
        for key, value in node["inputs"].items():
            if isinstance(value, list):
                kwargs[key] = run(value[0])[value[1]]
            else:
                kwargs[key] = value
        if "hidden" in cls.INPUT_TYPES():
            kwargs.update(prompt=api, extra_pnginfo=extra_pnginfo)
        results[node_id] = getattr(cls(), cls.FUNCTION)(**kwargs)
        return results[node_id]

    for node_id in api:
        run(node_id)
    return results


@pytest.mark.parametrize("name", PACK_ONLY_API_FILES)
def test_api_workflow_runs_on_tiny_models(pack, comfy_env, name):
    from blade_tiny_files import tiny_api_workflow

    from blade_ops.models.tiny import tiny_video_size
    from blade_ops.video_io import read_mp4, read_mp4_tags

    family = "wan" if name.startswith("wan") else "cogvideox"
    api = tiny_api_workflow(json.loads((API_DIR / name).read_text()), family)
    ui = json.loads((WORKFLOWS / name.replace(".api.json", ".json")).read_text())
    results = run_api_workflow(pack, api, extra_pnginfo={"workflow": ui})
    saved = [r["ui"]["images"][0] for r in results.values() if isinstance(r, dict) and "ui" in r]
    assert len(saved) == 1 and saved[0]["type"] == "output" and saved[0]["filename"].endswith(".mp4")
    path = comfy_env / saved[0]["subfolder"] / saved[0]["filename"]
    frames, _ = read_mp4(path)
    size = tiny_video_size(family)
    assert frames.shape[:3] == (size["frames"], size["height"], size["width"])
    tags = read_mp4_tags(path)  # ComfyUI's Save Video layout: one JSON tag per key, read by the UI on drop
    assert json.loads(tags["workflow"]) == ui and json.loads(tags["prompt"]) == api
