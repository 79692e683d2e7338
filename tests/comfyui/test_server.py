"""A real ComfyUI server runs the pack: it registers the nodes, validates and executes every API workflow on tiny
models, and the Save Video node's mp4 has the expected frames and size.

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

from blade_tiny_files import populate_models_dir, tiny_api_workflow  # noqa: E402

pytestmark = pytest.mark.comfyui

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
START_TIMEOUT_S = float(os.environ.get("COMFYUI_START_TIMEOUT", "240"))
RUN_TIMEOUT_S = float(os.environ.get("COMFYUI_RUN_TIMEOUT", "300"))
API_FILES = sorted(p.name for p in WORKFLOWS.glob("*.api.json"))


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
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = base / "server.log"
    cmd = [
        os.environ.get("COMFYUI_PYTHON", sys.executable), str(comfy / "main.py"), "--cpu", "--listen", "127.0.0.1",
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
    api = tiny_api_workflow(json.loads((WORKFLOWS / name).read_text()), family)
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
    api = tiny_api_workflow(json.loads((WORKFLOWS / "wan_baseline_50step.api.json").read_text()), "wan")
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
