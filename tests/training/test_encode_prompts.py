"""Contract: prompt pre-encoding is batched and resumable (an interrupted run continues at the first missing shard
and gives the same embeddings), stores the negative and empty prompts, and refuses a different prompt list."""

from __future__ import annotations

import pytest
import torch
from training_helpers import PROMPTS, tiny_bundle

from blade_ops.text import encode_text
from training import encode_prompts as module
from training.prompts import PromptEmbeddings


def test_resume_after_interruption(tmp_path, monkeypatch):
    bundle = tiny_bundle("wan")
    real_save = module.save_file
    calls = {"n": 0}

    def failing_save(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # negative file, shard 0, then shard 1 fails
            raise OSError("killed (simulated)")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(module, "save_file", failing_save)
    with pytest.raises(OSError):
        module.encode_to_folder(bundle, PROMPTS, tmp_path, batch_size=2, shard_size=3, dtype=torch.float32)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".safetensors") == [
        "negative.safetensors", "shard_00000.safetensors"]
    with pytest.raises(ValueError, match="incomplete"):
        PromptEmbeddings.open(tmp_path)

    module.encode_to_folder(bundle, PROMPTS, tmp_path, batch_size=2, shard_size=3, dtype=torch.float32)
    emb = PromptEmbeddings.open(tmp_path)
    assert emb.prompts == PROMPTS and emb.family == "wan"
    assert torch.allclose(emb.get(range(len(PROMPTS))), encode_text(bundle, PROMPTS), atol=1e-6)
    assert torch.allclose(emb.special("empty"), encode_text(bundle, [""]), atol=1e-6)
    assert emb.special("negative").shape == emb.special("empty").shape

    with pytest.raises(ValueError, match="digest"):
        module.encode_to_folder(bundle, PROMPTS[:2], tmp_path, batch_size=2, shard_size=3, dtype=torch.float32)
