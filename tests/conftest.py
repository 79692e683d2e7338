"""Shared test fixtures: tiny models saved to temporary folders, the pack imported the way ComfyUI imports it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "blade_pack"


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def pack():
    """The repository root imported as a package, as ComfyUI's custom-node loader does."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


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
