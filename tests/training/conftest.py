"""Fixtures of the training tests: a fresh accelerate state per test, prompt-embedding folders per family."""

from __future__ import annotations

import pytest
import torch
from training_helpers import PROMPTS, tiny_bundle


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """accelerate keeps one process-wide state; each test builds its Accelerator from scratch."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def embeddings_folder(tmp_path_factory):
    """Factory: family -> folder of pre-encoded PROMPTS (shard size 3, so two shards)."""
    from training.encode_prompts import encode_to_folder

    cache = {}

    def make(family: str):
        if family not in cache:
            cache[family] = encode_to_folder(
                tiny_bundle(family), PROMPTS, tmp_path_factory.mktemp(f"emb_{family}"), batch_size=2, shard_size=3,
                dtype=torch.float32,
            )
        return cache[family]

    return make
