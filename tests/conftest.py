"""Shared test fixtures: tiny models saved to temporary folders, the pack imported the way ComfyUI imports it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# blade_tiny_files: tiny models in a folder laid out like ComfyUI's models folder (nodes, workflows, server)
sys.path.insert(0, str(ROOT / "tests" / "nodes"))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def workflow_builder():
    """workflows/build_workflows.py, the script that writes the example workflows (it imports the pack too)."""
    spec = importlib.util.spec_from_file_location("build_workflows", ROOT / "workflows" / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_workflows"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pack(workflow_builder):
    """The repository root imported as a package, as ComfyUI's custom-node loader does."""
    return workflow_builder.load_pack()


@pytest.fixture(scope="session", params=["wan", "cogvideox"])
def family(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """Factory: a diffusers-format folder of the tiny model of a family, written once per session."""
    from blade_ops.models.tiny import save_tiny_diffusers_folder

    cache: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in cache:
            cache[family] = save_tiny_diffusers_folder(family, tmp_path_factory.mktemp(f"tiny_{family}"))
        return cache[family]

    return make


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """ComfyUI-style models folder with tiny Wan and CogVideoX models and LoRAs, written once per session."""
    from blade_tiny_files import populate_models_dir

    return populate_models_dir(tmp_path_factory.mktemp("comfy_models"))


@pytest.fixture
def comfy_env(models_dir, tmp_path, monkeypatch) -> Path:
    """Point the nodes' no-ComfyUI fallback at the tiny models and a fresh output folder; returns the output folder."""
    out = tmp_path / "output"
    monkeypatch.setenv("BLADE_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("BLADE_OUTPUT_DIR", str(out))
    return out
