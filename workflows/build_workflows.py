"""Generate the example workflows in both ComfyUI formats from one description, so the two always agree.

    python workflows/build_workflows.py          # rewrite workflows/*.json
    python workflows/build_workflows.py --check  # exit 1 if the committed JSON differs

UI format (``<name>.json``): what the ComfyUI frontend saves and loads by drag-and-drop (nodes with ids, positions,
sockets and link ids, widgets_values in widget order, links array, version 0.4). API format (``<name>.api.json``):
what POST /prompt takes (``{"id": {"class_type", "inputs"}}``). Widget order is read from the node classes'
INPUT_TYPES, the same way the frontend builds its widgets.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PACK_NAME = "blade_pack"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
SEED_CONTROL = "fixed"

log = logging.getLogger("build_workflows")

# Core ComfyUI node types the workflows use: widgets in order, then sockets (name, type) in and out.
CORE_NODES: dict[str, dict[str, Any]] = {
    "Note": {"widgets": ["text"], "inputs": [], "outputs": [], "api": False},
}


def load_pack():
    """The repository root imported as a package, as ComfyUI imports a custom node folder."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


def is_widget(spec: tuple) -> bool:
    """True when the frontend shows this input as a widget (combo or primitive), False for a socket."""
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def node_signature(class_type: str) -> dict[str, Any]:
    """widgets (names in order, with the seed-control slot), socket inputs and outputs of a node type."""
    if class_type in CORE_NODES:
        return CORE_NODES[class_type]
    cls = load_pack().NODE_CLASS_MAPPINGS[class_type]
    spec = cls.INPUT_TYPES()
    widgets: list[str] = []
    inputs: list[tuple[str, str, bool]] = []
    for section in ("required", "optional"):
        for name, item in spec.get(section, {}).items():
            if is_widget(item):
                widgets.append(name)
                if len(item) > 1 and isinstance(item[1], dict) and item[1].get("control_after_generate"):
                    widgets.append("control_after_generate")
            else:
                inputs.append((name, item[0], section == "optional"))
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return {
        "widgets": widgets,
        "inputs": [(n, t) for n, t, _ in inputs],
        "outputs": list(zip(names, cls.RETURN_TYPES, strict=True)),
        "api": True,
    }


@dataclass
class Node:
    id: int
    class_type: str
    title: str
    pos: tuple[int, int]
    widgets: dict[str, Any]
    size: tuple[int, int] = (340, 0)
    links_in: dict[str, int] = field(default_factory=dict)  # input name -> link id
    links_out: dict[str, list[int]] = field(default_factory=dict)  # output name -> link ids


@dataclass
class Graph:
    """A workflow under construction: add nodes, connect outputs to inputs, then emit UI or API JSON."""

    name: str
    nodes: list[Node] = field(default_factory=list)
    links: list[list] = field(default_factory=list)  # [id, from_node, from_slot, to_node, to_slot, type]

    def add(self, class_type: str, pos: tuple[int, int], title: str | None = None, **widgets: Any) -> Node:
        sig = node_signature(class_type)
        expected = [w for w in sig["widgets"] if w != "control_after_generate"]
        missing = [w for w in expected if w not in widgets]
        extra = [w for w in widgets if w not in sig["widgets"]]
        if missing or extra:
            raise ValueError(f"{class_type}: missing widgets {missing}, unknown widgets {extra}")
        height = 60 + 26 * (len(sig["widgets"]) + len(sig["inputs"]))
        title = title or load_pack().NODE_DISPLAY_NAME_MAPPINGS.get(class_type, class_type)
        node = Node(len(self.nodes) + 1, class_type, title, pos, widgets, size=(340, height))
        self.nodes.append(node)
        return node

    def connect(self, src: Node, output: str, dst: Node, input_name: str) -> None:
        out_sig = node_signature(src.class_type)["outputs"]
        in_sig = node_signature(dst.class_type)["inputs"]
        out_slot = [n for n, _ in out_sig].index(output)
        in_slot = [n for n, _ in in_sig].index(input_name)
        out_type, in_type = out_sig[out_slot][1], in_sig[in_slot][1]
        if out_type != in_type:
            raise ValueError(f"{src.class_type}.{output} ({out_type}) -> {dst.class_type}.{input_name} ({in_type})")
        link_id = len(self.links) + 1
        self.links.append([link_id, src.id, out_slot, dst.id, in_slot, out_type])
        dst.links_in[input_name] = link_id
        src.links_out.setdefault(output, []).append(link_id)

    def _widget_values(self, node: Node) -> list:
        values = []
        for name in node_signature(node.class_type)["widgets"]:
            values.append(SEED_CONTROL if name == "control_after_generate" else node.widgets[name])
        return values

    def ui(self) -> dict:
        nodes = []
        for order, node in enumerate(self.nodes):
            sig = node_signature(node.class_type)
            entry: dict[str, Any] = {
                "id": node.id,
                "type": node.class_type,
                "pos": list(node.pos),
                "size": list(node.size),
                "flags": {},
                "order": order,
                "mode": 0,
                "inputs": [
                    {"name": n, "type": t, "link": node.links_in.get(n)} for n, t in sig["inputs"]
                ],
                "outputs": [
                    {"name": n, "type": t, "links": node.links_out.get(n, []), "slot_index": i}
                    for i, (n, t) in enumerate(sig["outputs"])
                ],
                "title": node.title,
                "properties": {"Node name for S&R": node.class_type},
                "widgets_values": self._widget_values(node),
            }
            if node.class_type == "Note":
                entry.update(color="#432", bgcolor="#653")
            nodes.append(entry)
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": nodes,
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
            "version": 0.4,
        }

    def api(self) -> dict:
        out: dict[str, Any] = {}
        by_id = {n.id: n for n in self.nodes}
        for node in self.nodes:
            sig = node_signature(node.class_type)
            if not sig["api"]:
                continue
            inputs: dict[str, Any] = {k: v for k, v in node.widgets.items()}
            for name, link_id in node.links_in.items():
                link = self.links[link_id - 1]
                src = by_id[link[1]]
                inputs[name] = [str(src.id), link[2]]
            out[str(node.id)] = {"class_type": node.class_type, "inputs": inputs, "_meta": {"title": node.title}}
        return out


# ---------------------------------------------------------------------------------------------------------------
# The workflows

PROMPTS = {
    "wan": "A red fox trots through fresh snow in a quiet birch forest at sunrise, soft golden light, the camera "
    "slowly tracking alongside it.",
    "cogvideox": "A golden retriever runs along a sunny beach, waves rolling in behind it, kicking up sand, "
    "cinematic, shallow depth of field.",
}

FILES = {
    "wan": {
        "model": "wan2.1_t2v_1.3B_bf16.safetensors",
        "vae": "wan_2.1_vae.safetensors",
        "text_encoder": "umt5_xxl_fp16.safetensors",
        "lora": "blade_wan2.1_t2v_1.3B_8step.safetensors",
    },
    "cogvideox": {
        "model": "CogVideoX-5b",
        "vae": "CogVideoX-5b",
        "text_encoder": "CogVideoX-5b",
        "lora": "blade_cogvideox_5b_8step.safetensors",
    },
}

NOTES = {
    "wan": (
        "Files for this workflow (ComfyUI/models/...):\n"
        "- diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors (ComfyUI's repackaged Wan2.1 T2V 1.3B)\n"
        "- vae/wan_2.1_vae.safetensors\n"
        "- text_encoders/umt5_xxl_fp16.safetensors (ComfyUI's Wan text encoder; it carries its tokenizer. A "
        "diffusers folder such as diffusers/Wan2.1-T2V-1.3B-Diffusers/ works too)\n"
        "{lora}"
        "To use ComfyUI's own text encoding instead: CLIPLoader (type wan) -> "
        "CLIPTextEncode -> BLADE Conditioning To Embeds -> embeds."
    ),
    "cogvideox": (
        "Files for this workflow (ComfyUI/models/...):\n"
        "- diffusers/CogVideoX-5b/ (the THUDM/zai-org diffusers folder: transformer, vae, text_encoder, tokenizer, "
        "scheduler)\n"
        "{lora}"
    ),
}
LORA_NOTE = "- loras/{lora} (BLADE's pytorch_lora_weights.safetensors for this model, renamed)\n"


@dataclass(frozen=True)
class Recipe:
    """One example workflow: a family run as BLADE (ASA + LoRA, 8 steps) or as the dense 50-step baseline."""

    family: str
    blade: bool

    @property
    def name(self) -> str:
        return f"{self.family}_{'blade_8step' if self.blade else 'baseline_50step'}"


RECIPES = (Recipe("wan", True), Recipe("wan", False), Recipe("cogvideox", True), Recipe("cogvideox", False))
SIZES = {"wan": (832, 480, 81, 16), "cogvideox": (720, 480, 49, 8)}
BASELINE_GUIDANCE = {"wan": 5.0, "cogvideox": 6.0}


def build(recipe: Recipe) -> Graph:
    load_pack()
    families = importlib.import_module(f"{PACK_NAME}.blade_ops.families")
    family = recipe.family
    files = FILES[family]
    width, height, frames, fps = SIZES[family]
    negative = families.get_family(family).default_negative_prompt
    g = Graph(recipe.name)
    lora_line = LORA_NOTE.format(lora=files["lora"]) if recipe.blade else ""
    title = f"{'BLADE 8-step' if recipe.blade else 'Dense 50-step baseline'}: {family}"
    g.add("Note", (-420, 0), title=f"{title}: read me", text=NOTES[family].format(lora=lora_line))
    model = g.add("BladeModelLoader", (0, 0), model_name=files["model"], family=family, dtype="bf16")
    text_loader = g.add("BladeTextEncoderLoader", (0, 420), text_encoder_name=files["text_encoder"], family=family,
                        dtype="bf16")
    encode = g.add("BladeTextEncode", (400, 420), prompt=PROMPTS[family], negative_prompt=negative)
    g.connect(text_loader, "text_encoder", encode, "text_encoder")
    source, output = model, "model"
    if recipe.blade:
        asa = g.add("BladeASA", (400, 0), backend="auto", tau=0.95, min_ratio=0.05, max_ratio=0.0, num_keep=32,
                    use_global=True, sample_gap=0, dense_steps=0, dense_layers="", estimate_precision="auto")
        g.connect(model, "model", asa, "model")
        lora = g.add("BladeLoraLoader", (400, 300), lora_name=files["lora"], strength=1.0)
        g.connect(asa, "model", lora, "model")
        source = lora
    sampler = g.add(
        "BladeSampler", (800, 0), seed=42, steps=8 if recipe.blade else 50,
        guidance=1.0 if recipe.blade else BASELINE_GUIDANCE[family], scheduler="blade" if recipe.blade else "baseline",
        width=width, height=height, frames=frames, dynamic_guidance=(family == "cogvideox" and not recipe.blade),
    )
    g.connect(source, output, sampler, "model")
    g.connect(encode, "embeds", sampler, "embeds")
    vae = g.add("BladeVAELoader", (800, 420), vae_name=files["vae"], family=family, dtype="bf16")
    decode = g.add("BladeVAEDecode", (1200, 0), tiled=family == "cogvideox", compile=False)
    g.connect(vae, "vae", decode, "vae")
    g.connect(sampler, "latent", decode, "latent")
    save = g.add("BladeSaveVideo", (1200, 200), filename_prefix=f"BLADE/{recipe.name}", fps=float(fps), crf=19)
    g.connect(decode, "images", save, "images")
    return g


def build_all() -> dict[str, dict]:
    """File name -> JSON object of every workflow, UI and API form."""
    out: dict[str, dict] = {}
    for recipe in RECIPES:
        graph = build(recipe)
        out[f"{recipe.name}.json"] = graph.ui()
        out[f"{recipe.name}.api.json"] = graph.api()
    return out


def dumps(obj: dict) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stale = []
    for name, obj in build_all().items():
        path = HERE / name
        text = dumps(obj)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
            log.info("wrote %s", path)
    if args.check and stale:
        log.error("out of date: %s (run python workflows/build_workflows.py)", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
