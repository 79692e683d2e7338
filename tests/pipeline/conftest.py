"""Tiny bundles read back from diffusers folders, as a user's model would be (float32, CPU)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_bundle(tiny_folder):
    """Factory: the ModelBundle of a family's tiny folder, loaded once per session."""
    from blade_ops.models import load_model_bundle

    cache = {}

    def make(family: str):
        if family not in cache:
            cache[family] = load_model_bundle(tiny_folder(family), dtype=torch.float32)
        return cache[family]

    return make
