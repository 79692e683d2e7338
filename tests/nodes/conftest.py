"""Fixtures shared by the node tests: the pack's node classes and the tiny Wan loaded through BLADE Model Loader."""

from __future__ import annotations

import pytest
from blade_tiny_files import TINY_NAMES


@pytest.fixture(scope="module")
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def wan(nodes, models_dir):
    (model,) = nodes["BladeModelLoader"]().load(str(models_dir / "diffusers" / TINY_NAMES["wan"]), "auto", "fp32")
    return model
