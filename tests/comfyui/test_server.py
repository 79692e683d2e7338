"""A real ComfyUI server runs the pack: it registers the nodes, validates and executes every API workflow on tiny
models, and the Save Video node's mp4 has the expected frames and size. The workflows on core's own loaders run
with tiny files in core's formats (tests/comfyui/write_core_files.py) and report the density ASA kept.

Needs a ComfyUI checkout in $COMFYUI_PATH (skipped otherwise) and a Python that can run it in $COMFYUI_PYTHON
(default: this interpreter) with the pack's requirements installed. Everything the server writes stays in a
temporary base directory (--base-directory); it listens on 127.0.0.1 only, on a free port, with --cpu.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "nodes"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from blade_tiny_files import populate_models_dir, tiny_api_workflow  # noqa: E402
from write_core_files import TEXT_ENCODER_FOLDER  # noqa: E402

pytestmark = pytest.mark.comfyui

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
API = WORKFLOWS / "api"
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
START_TIMEOUT_S = float(os.environ.get("COMFYUI_START_TIMEOUT", "240"))
RUN_TIMEOUT_S = float(os.environ.get("COMFYUI_RUN_TIMEOUT", "300"))
NATIVE_FILES = sorted(p.name for p in API.glob("*native*.api.json"))
API_FILES = sorted(p.name for p in API.glob("*.api.json") if p.name not in NATIVE_FILES)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
            return json.loads(body) if body.strip() else {}
    except urllib.error.HTTPError as err:
        raise AssertionError(f"POST {url} -> {err.code}: {err.read().decode(errors='replace')}") from None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A ComfyUI server with the pack in custom_nodes and tiny models in its models folder; yields (url, base)."""
    if not COMFYUI_PATH:
        pytest.skip("set COMFYUI_PATH to a ComfyUI checkout to run the server tests")
    comfy = Path(COMFYUI_PATH).resolve()
    if not (comfy / "main.py").is_file():
        pytest.fail(f"COMFYUI_PATH={COMFYUI_PATH} has no main.py; point it at a ComfyUI checkout.")
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-blade").symlink_to(ROOT, target_is_directory=True)
    populate_models_dir(base / "models")
    subprocess.run([COMFYUI_PYTHON, str(Path(__file__).with_name("write_core_files.py")), str(base / "models")],
                   check=True, env={**os.environ, "COMFYUI_PATH": str(comfy)})
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = base / "server.log"
    cmd = [
        COMFYUI_PYTHON, str(comfy / "main.py"), "--cpu", "--listen", "127.0.0.1",
        "--port", str(port), "--base-directory", str(base), "--disable-auto-launch",
        "--database-url", "sqlite:///:memory:",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=comfy, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                _get(f"{url}/system_stats", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not answer within {START_TIMEOUT_S}s:\n{log_path.read_text()[-4000:]}")
                time.sleep(1.0)
        yield url, base, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def test_nodes_are_registered(server):
    url, _, log_path = server
    info = _get(f"{url}/object_info")
    ours = {k: v for k, v in info.items() if v.get("category") == "BLADE"}
    assert "BladeSampler" in ours, f"pack not loaded:\n{log_path.read_text()[-4000:]}"
    assert len(ours) >= 10
    loader = info["BladeModelLoader"]["input"]["required"]["model_name"][0]
    assert "tiny_wan" in loader and "tiny_cogvideox" in loader
    assert "tiny_wan_blade_lora.safetensors" in info["BladeLoraLoader"]["input"]["required"]["lora_name"][0]
    native = ("BladeNativeASA", "BladeNativeLoRA", "BladeSchedule", "BladeUniPCSampler", "BladeEmbedsToConditioning")
    assert set(native) <= set(ours)


def test_core_node_signatures_in_the_workflow_builder_match_comfyui(server, workflow_builder):
    """The build script describes core's nodes by hand (it runs without ComfyUI): check it against the server."""
    url, _, _ = server
    info = _get(f"{url}/object_info")
    for class_type, sig in workflow_builder.CORE_NODES.items():
        if class_type == "Note":  # a frontend-only node
            continue
        spec = info[class_type]["input"]
        order = info[class_type]["input_order"]
        names = order["required"] + order.get("optional", [])
        items = {**spec["required"], **spec.get("optional", {})}
        widgets = []
        for name in names:
            kind = items[name][0]
            if isinstance(kind, list) or kind in workflow_builder.WIDGET_TYPES or kind == "COMBO":
                widgets.append(name)
                if len(items[name]) > 1 and items[name][1].get("control_after_generate"):
                    widgets.append("control_after_generate")
        sockets = [(n, items[n][0]) for n in names if n not in widgets]
        assert widgets == sig["widgets"], class_type
        assert sockets == [tuple(x) for x in sig["inputs"]], class_type
        outputs = list(zip(info[class_type]["output_name"], info[class_type]["output"], strict=True))
        assert outputs == [tuple(x) for x in sig["outputs"]], class_type


def _wait_for(url: str, prompt_id: str, log_path: Path) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        history = _get(f"{url}/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            entry = history[prompt_id]
            if entry["status"].get("status_str") == "success":
                return entry
            raise AssertionError(f"run failed: {json.dumps(entry['status'])[:4000]}\n{log_path.read_text()[-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"no result within {RUN_TIMEOUT_S}s:\n{log_path.read_text()[-4000:]}")


@pytest.mark.parametrize("name", API_FILES)
def test_workflow_runs_in_comfyui(server, name):
    from blade_ops.models.tiny import tiny_video_size
    from blade_ops.video_io import read_mp4, read_mp4_tags

    url, base, log_path = server
    family = "wan" if name.startswith("wan") else "cogvideox"
    api = tiny_api_workflow(json.loads((API / name).read_text()), family)
    ui = json.loads((WORKFLOWS / name.replace(".api.json", ".json")).read_text())
    payload = {"prompt": api, "client_id": uuid.uuid4().hex, "extra_data": {"extra_pnginfo": {"workflow": ui}}}
    queued = _post(f"{url}/prompt", payload)
    assert not queued.get("node_errors"), queued
    entry = _wait_for(url, queued["prompt_id"], log_path)
    saved = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    assert len(saved) == 1 and saved[0]["filename"].endswith(".mp4") and saved[0]["type"] == "output"
    path = base / "output" / saved[0]["subfolder"] / saved[0]["filename"]
    frames, _ = read_mp4(path)
    size = tiny_video_size(family)
    assert frames.shape[:3] == (size["frames"], size["height"], size["width"])
    tags = read_mp4_tags(path)  # what core's Save Video writes and the UI reads back
    assert json.loads(tags["prompt"]) == api and json.loads(tags["workflow"]) == ui


def test_cancel_stops_the_sampler_and_the_next_run_works(server):
    """POST /interrupt (the UI's Cancel) during a long run ends it within a step; the model then runs again."""
    url, _, log_path = server
    api = tiny_api_workflow(json.loads((API / "wan_baseline_50step.api.json").read_text()), "wan")
    sampler = next(n for n in api.values() if n["class_type"] == "BladeSampler")
    sampler["inputs"]["steps"] = 1000
    queued = _post(f"{url}/prompt", {"prompt": api, "client_id": uuid.uuid4().hex})
    deadline = time.monotonic() + 60
    while "1000 steps" not in log_path.read_text():  # the sampler's start line: sampling has begun
        assert time.monotonic() < deadline, f"the sampler never started:\n{log_path.read_text()[-3000:]}"
        time.sleep(0.2)
    time.sleep(1.0)  # well inside the 1000-step loop (about 25 ms a step on the tiny model)
    start = time.monotonic()
    _post(f"{url}/interrupt", {})
    deadline = start + 60
    while True:
        history = _get(f"{url}/history/{queued['prompt_id']}")
        status = history.get(queued["prompt_id"], {}).get("status", {})
        if status.get("completed") is not None:
            break
        assert time.monotonic() < deadline, f"not stopped after 60 s:\n{log_path.read_text()[-3000:]}"
        time.sleep(0.2)
    assert status["status_str"] != "success", f"not interrupted: {status}\n{log_path.read_text()[-3000:]}"
    assert any(m[0] == "execution_interrupted" for m in status.get("messages", [])), status
    assert time.monotonic() - start < 10
    sampler["inputs"]["steps"] = 2
    again = _post(f"{url}/prompt", {"prompt": api, "client_id": uuid.uuid4().hex})
    entry = _wait_for(url, again["prompt_id"], log_path)
    assert any(out.get("images") for out in entry["outputs"].values())


NATIVE_SIZE = dict(width=256, height=256, length=9)  # latent 3 x 32 x 32 (Wan2.1) -> 768 tokens, 6 ASA blocks


def tiny_native_workflow(api: dict) -> dict:
    """A workflow on core's loaders with a size the tiny files take, 3 steps instead of 50, and the text path
    through the pack's text encoder (core's CLIPLoader builds Wan's UMT5 only at its released XXL size)."""
    api = json.loads(json.dumps(api))
    new_id = max(int(k) for k in api) + 100
    renamed: dict[str, str] = {}
    for node_id, node in list(api.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CLIPLoader":
            api[node_id] = {"class_type": "BladeTextEncoderLoader", "inputs": {
                "text_encoder_name": TEXT_ENCODER_FOLDER, "family": "wan", "dtype": "fp32"}}
        elif kind == "CLIPTextEncode":
            api[node_id] = {"class_type": "BladeTextEncode", "inputs": {
                "text_encoder": inputs["clip"], "prompt": inputs["text"], "negative_prompt": ""}}
            new_id += 1
            api[str(new_id)] = {"class_type": "BladeEmbedsToConditioning", "inputs": {"embeds": [node_id, 0]}}
            renamed[node_id] = str(new_id)
        elif kind in ("EmptyHunyuanLatentVideo", "Wan22ImageToVideoLatent"):
            inputs.update(NATIVE_SIZE)
        elif kind == "KSampler":
            inputs["steps"] = 3
    for node in api.values():
        for key, value in node["inputs"].items():
            if isinstance(value, list) and value[0] in renamed and node["class_type"] != "BladeEmbedsToConditioning":
                node["inputs"][key] = [renamed[value[0]], value[1]]
    return api


def _density_lines(log_path: Path) -> list[str]:
    return [line for line in log_path.read_text().splitlines() if "sparse self-attention calls, mean density" in line]


@pytest.mark.parametrize("name", NATIVE_FILES)
def test_workflow_on_core_loaders_runs_in_comfyui(server, name):
    """Core's UNETLoader / VAELoader / samplers / VAE Decode / Save Video with the pack's patches on the MODEL."""
    import re

    from blade_ops.video_io import read_mp4

    url, base, log_path = server
    api = tiny_native_workflow(json.loads((API / name).read_text()))
    before = len(_density_lines(log_path))
    queued = _post(f"{url}/prompt", {"prompt": api, "client_id": uuid.uuid4().hex})
    assert not queued.get("node_errors"), queued
    entry = _wait_for(url, queued["prompt_id"], log_path)
    saved = [v for out in entry["outputs"].values() for key in ("images", "videos") for v in out.get(key, [])]
    assert len(saved) == 1 and saved[0]["filename"].endswith(".mp4"), entry["outputs"]
    frames, _ = read_mp4(base / "output" / saved[0]["subfolder"] / saved[0]["filename"])
    assert frames.shape[:3] == (NATIVE_SIZE["length"], NATIVE_SIZE["height"], NATIVE_SIZE["width"])
    reports = _density_lines(log_path)[before:]
    if "baseline" in name:
        assert not reports, reports
        return
    assert len(reports) == 1, log_path.read_text()[-3000:]
    density = float(re.search(r"mean density ([0-9.]+)", reports[0])[1])
    assert 0.0 < density < 1.0, reports[0]  # sparse for real (768 tokens: 2 of 6 key blocks, 5 on Wan2.2)
    if "blade" in name:
        assert "settings from LoRA #1's metadata" in reports[0], reports[0]
