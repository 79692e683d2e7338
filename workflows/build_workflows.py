"""Generate the example workflows in both ComfyUI formats from one description, so the two always agree.

    python workflows/build_workflows.py          # rewrite workflows/*.json and workflows/api/*.api.json
    python workflows/build_workflows.py --check  # exit 1 if the committed JSON differs

UI format (``workflows/<name>.json``): what the ComfyUI frontend saves and loads by drag-and-drop (nodes with ids,
positions, sockets and link ids, widgets_values in widget order, links array, version 0.4). ComfyUI serves every
``.json`` directly in ``workflows/`` as one of the pack's templates (with ``<name>.jpg`` as its thumbnail), so only
UI workflows live there. API format (``workflows/api/<name>.api.json``): what POST /prompt takes (``{"id":
{"class_type", "inputs"}}``). Widget order is read from the node classes' INPUT_TYPES, the same way the frontend
builds its widgets; core ComfyUI nodes are described in ``CORE_NODES`` (checked against a real ComfyUI by the tests
in tests/comfyui).

Nodes are laid out in columns, stacked without overlap, with the Note first so that it is in view when a
workflow opens.
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

# Core ComfyUI node types the workflows use (ComfyUI a125cd8): widgets in order, then sockets (name, type) in and out.
# "multiline": widgets the frontend draws as a text box (they need room in the layout).
CORE_NODES: dict[str, dict[str, Any]] = {
    "Note": {"widgets": ["text"], "inputs": [], "outputs": [], "api": False, "multiline": ["text"]},
    "UNETLoader": {"widgets": ["unet_name", "weight_dtype"], "inputs": [], "outputs": [("MODEL", "MODEL")]},
    "CLIPLoader": {"widgets": ["clip_name", "type", "device"], "inputs": [], "outputs": [("CLIP", "CLIP")]},
    "CLIPTextEncode": {"widgets": ["text"], "inputs": [("clip", "CLIP")], "outputs": [("CONDITIONING", "CONDITIONING")],
                       "multiline": ["text"]},
    "VAELoader": {"widgets": ["vae_name"], "inputs": [], "outputs": [("VAE", "VAE")]},
    "EmptyHunyuanLatentVideo": {"widgets": ["width", "height", "length", "batch_size"], "inputs": [],
                                "outputs": [("LATENT", "LATENT")]},
    "Wan22ImageToVideoLatent": {"widgets": ["width", "height", "length", "batch_size"],
                                "inputs": [("vae", "VAE"), ("start_image", "IMAGE")],
                                "outputs": [("LATENT", "LATENT")]},
    "ModelSamplingSD3": {"widgets": ["shift"], "inputs": [("model", "MODEL")], "outputs": [("MODEL", "MODEL")]},
    "KSampler": {"widgets": ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler",
                             "denoise"],
                 "inputs": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                            ("latent_image", "LATENT")],
                 "outputs": [("LATENT", "LATENT")]},
    "RandomNoise": {"widgets": ["noise_seed", "control_after_generate"], "inputs": [], "outputs": [("NOISE", "NOISE")]},
    "BasicGuider": {"widgets": [], "inputs": [("model", "MODEL"), ("conditioning", "CONDITIONING")],
                    "outputs": [("GUIDER", "GUIDER")]},
    "SamplerCustomAdvanced": {"widgets": [],
                              "inputs": [("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"),
                                         ("sigmas", "SIGMAS"), ("latent_image", "LATENT")],
                              "outputs": [("output", "LATENT"), ("denoised_output", "LATENT")]},
    "VAEDecode": {"widgets": [], "inputs": [("samples", "LATENT"), ("vae", "VAE")], "outputs": [("IMAGE", "IMAGE")]},
    "CreateVideo": {"widgets": ["fps"], "inputs": [("images", "IMAGE"), ("audio", "AUDIO")],
                    "outputs": [("VIDEO", "VIDEO")]},
    "SaveVideo": {"widgets": ["filename_prefix", "format", "codec"], "inputs": [("video", "VIDEO")], "outputs": []},
}
OPTIONAL_CORE_INPUTS = {("Wan22ImageToVideoLatent", "start_image"), ("CreateVideo", "audio")}

# Layout: columns of nodes, in LiteGraph units (the frontend's canvas pixels at zoom 1).
COLUMN_WIDTH, COLUMN_GAP, ROW_GAP, MARGIN = 360, 50, 40, 20
TITLE_H, SLOT_H, WIDGET_H, TEXTBOX_H = 34, 22, 26, 110


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
        return {"api": True, "multiline": [], **CORE_NODES[class_type]}
    cls = load_pack().NODE_CLASS_MAPPINGS[class_type]
    spec = cls.INPUT_TYPES()
    widgets: list[str] = []
    multiline: list[str] = []
    inputs: list[tuple[str, str, bool]] = []
    for section in ("required", "optional"):
        for name, item in spec.get(section, {}).items():
            if is_widget(item):
                widgets.append(name)
                if len(item) > 1 and isinstance(item[1], dict) and item[1].get("multiline"):
                    multiline.append(name)
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
        "multiline": multiline,
    }


def node_height(sig: dict[str, Any]) -> int:
    """Room a node needs: title, one row per socket pair, one per widget, text boxes taller."""
    widgets = [w for w in sig["widgets"] if w != "control_after_generate"] + (
        ["control"] if "control_after_generate" in sig["widgets"] else [])
    boxes = len(sig["multiline"])
    rows = max(len(sig["inputs"]), len(sig["outputs"]))
    return TITLE_H + SLOT_H * rows + WIDGET_H * (len(widgets) - boxes) + TEXTBOX_H * boxes + 10


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
    column_bottoms: dict[int, int] = field(default_factory=dict)

    def add(self, class_type: str, column: int, title: str | None = None, box_height: int | None = None,
            **widgets: Any) -> Node:
        """A node at the bottom of ``column`` (0 = leftmost), below what is already there."""
        sig = node_signature(class_type)
        expected = [w for w in sig["widgets"] if w != "control_after_generate"]
        missing = [w for w in expected if w not in widgets]
        extra = [w for w in widgets if w not in sig["widgets"]]
        if missing or extra:
            raise ValueError(f"{class_type}: missing widgets {missing}, unknown widgets {extra}")
        height = box_height or node_height(sig)
        x = MARGIN + column * (COLUMN_WIDTH + COLUMN_GAP)
        y = self.column_bottoms.get(column, MARGIN - ROW_GAP) + ROW_GAP
        self.column_bottoms[column] = y + TITLE_H + height  # pos is the body's corner; the title sits above it
        y += TITLE_H
        title = title or load_pack().NODE_DISPLAY_NAME_MAPPINGS.get(class_type, class_type)
        node = Node(len(self.nodes) + 1, class_type, title, (x, y), widgets, size=(COLUMN_WIDTH, height))
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
            "extra": {"ds": {"scale": 0.75, "offset": [0, 0]}},
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
        "CLIPTextEncode -> BLADE Conditioning To Embeds -> embeds. To keep ComfyUI's own loaders and samplers, "
        "open the wan_native_* workflows."
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
    """One example workflow on the pack's own loaders and sampler: BLADE (ASA + LoRA, 8 steps) or the baseline."""

    family: str
    blade: bool

    @property
    def name(self) -> str:
        return f"{self.family}_{'blade_8step' if self.blade else 'baseline_50step'}"


RECIPES = (Recipe("wan", True), Recipe("wan", False), Recipe("cogvideox", True), Recipe("cogvideox", False))
SIZES = {"wan": (832, 480, 81, 16), "cogvideox": (720, 480, 49, 8)}
BASELINE_GUIDANCE = {"wan": 5.0, "cogvideox": 6.0}
ASA_DEFAULTS = dict(settings="LoRA's, else family defaults", backend="auto", tau=0.95, min_ratio=0.05,
                    max_ratio=0.17, num_keep=32, use_global=True, sample_gap=30, dense_steps=0, estimate_precision="auto")


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
    g.add("Note", 0, title=f"{title}: read me", box_height=300, text=NOTES[family].format(lora=lora_line))
    model = g.add("BladeModelLoader", 1, model_name=files["model"], family=family, dtype="bf16")
    source, output = model, "model"
    if recipe.blade:
        asa = g.add("BladeASA", 1, **ASA_DEFAULTS, dense_layers="")
        g.connect(model, "model", asa, "model")
        lora = g.add("BladeLoraLoader", 1, lora_name=files["lora"], strength=1.0)
        g.connect(asa, "model", lora, "model")
        source = lora
    text_loader = g.add("BladeTextEncoderLoader", 0, text_encoder_name=files["text_encoder"], family=family,
                        dtype="bf16")
    encode = g.add("BladeTextEncode", 2, prompt=PROMPTS[family], negative_prompt=negative)
    g.connect(text_loader, "text_encoder", encode, "text_encoder")
    sampler = g.add(
        "BladeSampler", 2, seed=42, steps=8 if recipe.blade else 50,
        guidance=1.0 if recipe.blade else BASELINE_GUIDANCE[family], scheduler="blade" if recipe.blade else "baseline",
        width=width, height=height, frames=frames, dynamic_guidance=(family == "cogvideox" and not recipe.blade),
        linear_precision="as loaded", compile=False,
    )
    g.connect(source, output, sampler, "model")
    g.connect(encode, "embeds", sampler, "embeds")
    vae = g.add("BladeVAELoader", 3, vae_name=files["vae"], family=family, dtype="bf16")
    decode = g.add("BladeVAEDecode", 3, tiled=family == "cogvideox", compile=False)
    g.connect(vae, "vae", decode, "vae")
    g.connect(sampler, "latent", decode, "latent")
    save = g.add("BladeSaveVideo", 3, filename_prefix=f"BLADE/{recipe.name}", fps=float(fps), crf=19)
    g.connect(decode, "images", save, "images")
    return g


# ---- workflows on ComfyUI's own loaders and samplers (the models users already have) ---------------------------


@dataclass(frozen=True)
class NativeRecipe:
    """A workflow with core's loaders (UNETLoader, CLIPLoader, VAELoader), samplers, VAE Decode and Save Video."""

    name: str
    title: str
    model: str
    vae: str
    size: tuple[int, int, int, int]  # width, height, frames, fps
    mode: str  # "blade": ASA + BLADE LoRA, 8 steps, no CFG; "baseline": dense 50 steps CFG; "asa": training-free
    shift: float = 3.0
    wan22: bool = False  # Wan2.2 TI2V-5B: 48-channel latent from Wan22ImageToVideoLatent
    note: str = ""


TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
BLADE_LORA = FILES["wan"]["lora"]
NATIVE_RECIPES = (
    NativeRecipe(
        "wan_native_blade_8step", "BLADE 8-step on ComfyUI's Wan2.1 1.3B", "wan2.1_t2v_1.3B_bf16.safetensors",
        "wan_2.1_vae.safetensors", (832, 480, 81, 16), "blade",
        note="- loras/{lora} (BLADE's released Wan LoRA, pytorch_lora_weights.safetensors, renamed)\n"
        "BLADE ASA and BLADE LoRA patch the model from Load Diffusion Model; BLADE Schedule gives the 8 sigmas and "
        "BLADE UniPC the solver the LoRA was distilled for; no CFG (Basic Guider). The density ASA kept is "
        "printed in the console after each run.",
    ),
    NativeRecipe(
        "wan_native_baseline_50step", "Dense 50-step baseline on ComfyUI's Wan2.1 1.3B",
        "wan2.1_t2v_1.3B_bf16.safetensors", "wan_2.1_vae.safetensors", (832, 480, 81, 16), "baseline",
        note="The reference BLADE is measured against: UniPC, shift 3.0, 50 steps, CFG 5.0 with Wan's negative "
        "prompt, dense attention.",
    ),
    NativeRecipe(
        "wan14b_native_asa_fp8", "Training-free ASA on ComfyUI's Wan2.1 14B fp8_scaled",
        "wan2.1_t2v_14B_fp8_scaled.safetensors", "wan_2.1_vae.safetensors", (832, 480, 81, 16), "asa",
        note="No BLADE LoRA exists for 14B: ASA runs training-free inside the usual 50-step CFG sampling, "
        "dense for the first 20% of the steps (start_percent) where the layout of the video is decided.",
    ),
    NativeRecipe(
        "wan22_5b_native_asa", "Training-free ASA on ComfyUI's Wan2.2 TI2V-5B", "wan2.2_ti2v_5B_fp16.safetensors",
        "wan2.2_vae.safetensors", (1280, 704, 121, 24), "asa", shift=5.0, wan22=True,
        note="Wan2.2 TI2V-5B at its release settings (121 frames at 1280x704, 24 fps, shift 5.0, 50 steps, CFG 5.0) "
        "with training-free ASA, dense for the first 20% of the steps. Connect an image to Wan22ImageToVideoLatent's "
        "start_image for image-to-video.",
    ),
)


def native_note(recipe: NativeRecipe) -> str:
    return (
        f"{recipe.title}\n\nFiles (ComfyUI/models/...):\n"
        f"- diffusion_models/{recipe.model}\n"
        f"- text_encoders/{TEXT_ENCODER} (or umt5_xxl_fp16.safetensors)\n"
        f"- vae/{recipe.vae}\n"
        + recipe.note.format(lora=BLADE_LORA)
        + "\nThe pack's diffusers/ folder loaders are not needed here."
    )


def build_native(recipe: NativeRecipe) -> Graph:
    load_pack()
    families = importlib.import_module(f"{PACK_NAME}.blade_ops.families")
    width, height, frames, fps = recipe.size
    g = Graph(recipe.name)
    g.add("Note", 0, title="Read me", box_height=330, text=native_note(recipe))
    unet = g.add("UNETLoader", 1, unet_name=recipe.model, weight_dtype="default")
    model, output = unet, "MODEL"
    if recipe.mode in ("blade", "asa"):
        asa = g.add("BladeNativeASA", 1, **ASA_DEFAULTS, dense_blocks="",
                    start_percent=0.0 if recipe.mode == "blade" else 0.2, end_percent=1.0)
        g.connect(unet, "MODEL", asa, "model")
        model, output = asa, "model"
    if recipe.mode == "blade":
        lora = g.add("BladeNativeLoRA", 1, lora_name=BLADE_LORA, strength=1.0)
        g.connect(model, output, lora, "model")
        model, output = lora, "model"
    clip = g.add("CLIPLoader", 0, clip_name=TEXT_ENCODER, type="wan", device="default")
    positive = g.add("CLIPTextEncode", 2, title="Prompt", text=PROMPTS["wan"])
    g.connect(clip, "CLIP", positive, "clip")
    vae = g.add("VAELoader", 0, vae_name=recipe.vae)
    if recipe.wan22:
        latent = g.add("Wan22ImageToVideoLatent", 2, width=width, height=height, length=frames, batch_size=1)
        g.connect(vae, "VAE", latent, "vae")
    else:
        latent = g.add("EmptyHunyuanLatentVideo", 2, width=width, height=height, length=frames, batch_size=1)
    if recipe.mode == "blade":
        noise = g.add("RandomNoise", 3, noise_seed=42)
        guider = g.add("BasicGuider", 3, title="Basic Guider (no CFG)")
        g.connect(model, output, guider, "model")
        g.connect(positive, "CONDITIONING", guider, "conditioning")
        solver = g.add("BladeUniPCSampler", 3)
        sigmas = g.add("BladeSchedule", 3, steps=8, shift=recipe.shift)
        sample = g.add("SamplerCustomAdvanced", 4)
        for src, out, dst in ((noise, "NOISE", "noise"), (guider, "GUIDER", "guider"), (solver, "sampler", "sampler"),
                              (sigmas, "sigmas", "sigmas"), (latent, "LATENT", "latent_image")):
            g.connect(src, out, sample, dst)
        samples = (sample, "output")
    else:
        negative = g.add("CLIPTextEncode", 2, title="Negative prompt",
                         text=families.get_family("wan").default_negative_prompt)
        g.connect(clip, "CLIP", negative, "clip")
        shifted = g.add("ModelSamplingSD3", 3, shift=recipe.shift)
        g.connect(model, output, shifted, "model")
        sample = g.add("KSampler", 3, seed=42, steps=50, cfg=5.0, sampler_name="uni_pc_bh2", scheduler="simple",
                       denoise=1.0)
        for src, out, dst in ((shifted, "MODEL", "model"), (positive, "CONDITIONING", "positive"),
                              (negative, "CONDITIONING", "negative"), (latent, "LATENT", "latent_image")):
            g.connect(src, out, sample, dst)
        samples = (sample, "LATENT")
    decode = g.add("VAEDecode", 4)
    g.connect(samples[0], samples[1], decode, "samples")
    g.connect(vae, "VAE", decode, "vae")
    video = g.add("CreateVideo", 4, fps=float(fps))
    g.connect(decode, "IMAGE", video, "images")
    save = g.add("SaveVideo", 4, filename_prefix=f"BLADE/{recipe.name}", format="auto", codec="auto")
    g.connect(video, "VIDEO", save, "video")
    return g


API_DIR = "api"


def build_all() -> dict[str, dict]:
    """Path relative to workflows/ -> JSON object of every workflow: UI form here, API form under api/."""
    out: dict[str, dict] = {}
    graphs = [build(r) for r in RECIPES] + [build_native(r) for r in NATIVE_RECIPES]
    for graph in graphs:
        out[f"{graph.name}.json"] = graph.ui()
        out[f"{API_DIR}/{graph.name}.api.json"] = graph.api()
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
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            log.info("wrote %s", path)
    if args.check and stale:
        log.error("out of date: %s (run python workflows/build_workflows.py)", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
