"""Contract: resuming from a checkpoint continues exactly like an uninterrupted run (same losses, same weights,
fp32), and an exception in the middle of a checkpoint write leaves the previous checkpoint complete and usable."""

from __future__ import annotations

import pytest
import torch
from training_helpers import make_distiller

from training import checkpoint
from training.checkpoint import list_checkpoints, resolve_resume
from training.distill import train
from training.models import FAKE, STUDENT


def _weights(d):
    return {a: d.lora_tensors(a) for a in (STUDENT, FAKE)}


def test_resume_matches_uninterrupted_run(embeddings_folder, tmp_path):
    emb = embeddings_folder("wan")
    full = make_distiller("wan", emb, tmp_path / "full", checkpointing_steps=2, max_train_steps=4)
    full_logs = train(full)

    first = make_distiller("wan", emb, tmp_path / "split", checkpointing_steps=2, max_train_steps=4)
    train(first, 2)
    del first
    resumed = make_distiller("wan", emb, tmp_path / "split", checkpointing_steps=2, max_train_steps=4)
    torch.manual_seed(999)  # a different global RNG state must not matter: the checkpoint restores it
    resumed.load_checkpoint(resolve_resume(tmp_path / "split", "latest"))
    assert resumed.step == 2
    rest = train(resumed)

    assert [(log.loss_fake, log.loss_student) for log in rest] == [
        (log.loss_fake, log.loss_student) for log in full_logs[2:]
    ]
    for adapter, tensors in _weights(full).items():
        for name, value in tensors.items():
            assert torch.equal(value, _weights(resumed)[adapter][name]), name


def test_interrupted_write_keeps_previous_checkpoint(embeddings_folder, tmp_path, monkeypatch):
    d = make_distiller("wan", embeddings_folder("wan"), tmp_path, checkpointing_steps=1, max_train_steps=3)
    train(d, 1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1"]
    expected = d.lora_tensors(STUDENT)

    calls = {"n": 0}
    real_write = checkpoint.write_durably

    def failing_write(path, data):
        calls["n"] += path.name.startswith("lora_")
        if calls["n"] == 2:  # the second LoRA file of checkpoint-2: mid-write
            raise OSError("disk full (simulated)")
        return real_write(path, data)

    monkeypatch.setattr(checkpoint, "write_durably", failing_write)
    with pytest.raises(OSError, match="simulated"):
        train(d, 2)
    monkeypatch.undo()

    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1"]
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "checkpoints").iterdir())
    fresh = make_distiller("wan", embeddings_folder("wan"), tmp_path, checkpointing_steps=1, max_train_steps=3)
    fresh.load_checkpoint(resolve_resume(tmp_path, "latest"))
    assert fresh.step == 1
    for name, value in fresh.lora_tensors(STUDENT).items():
        assert torch.equal(value, expected[name])
    train(fresh)  # and training goes on from it
    assert [p.name for p in list_checkpoints(tmp_path)][-1] == "checkpoint-3"


@pytest.mark.parametrize(
    "changed", [dict(lora_alpha=8), dict(lora_rank=8), dict(learning_rate=1e-2), dict(lora_targets=("to_q", "to_v"))],
    ids=lambda c: next(iter(c)),
)
def test_resume_with_a_changed_lora_or_optimizer_setting_is_refused(embeddings_folder, tmp_path, changed):
    """The checkpoint's LoRA tensors and optimizer state would silently override (alpha, learning rate) or not fit
    (rank, targets) the new values: resuming says which setting changed instead."""
    emb = embeddings_folder("wan")
    train(make_distiller("wan", emb, tmp_path, checkpointing_steps=1, max_train_steps=1))
    resumed = make_distiller("wan", emb, tmp_path, max_train_steps=3, **changed)
    with pytest.raises(ValueError, match=next(iter(changed))):
        resumed.load_checkpoint(resolve_resume(tmp_path, "latest"))


def test_resume_with_more_steps_is_allowed(embeddings_folder, tmp_path):
    emb = embeddings_folder("wan")
    train(make_distiller("wan", emb, tmp_path, checkpointing_steps=1, max_train_steps=1))
    resumed = make_distiller("wan", emb, tmp_path, max_train_steps=3, checkpointing_steps=5)
    resumed.load_checkpoint(resolve_resume(tmp_path, "latest"))
    assert resumed.step == 1
