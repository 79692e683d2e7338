"""Fixtures for the node tests: tiny models in a folder laid out like ComfyUI's models folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from blade_tiny_files import populate_models_dir  # noqa: E402


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """ComfyUI-style models folder with tiny Wan and CogVideoX models and LoRAs, written once per session."""
    return populate_models_dir(tmp_path_factory.mktemp("comfy_models"))


@pytest.fixture
def comfy_env(models_dir, tmp_path, monkeypatch) -> Path:
    """Point the nodes' no-ComfyUI fallback at the tiny models and a fresh output folder; returns the output folder."""
    out = tmp_path / "output"
    monkeypatch.setenv("BLADE_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("BLADE_OUTPUT_DIR", str(out))
    return out
