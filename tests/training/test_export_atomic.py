"""Contract: the exported LoRA is replaced atomically by our own code (a temporary file in the same folder, fsync,
rename): a write that fails half-way leaves the previous LoRA byte for byte and no temporary file; a full disk says
where and how much the LoRA needs; non-finite weights are never exported."""

from __future__ import annotations

import errno

import pytest
import torch
from training_helpers import make_distiller

from training import export
from training.errors import DiskFullError, NonFiniteLossError
from training.models import STUDENT


def test_failed_export_keeps_the_previous_lora(embeddings_folder, tmp_path, monkeypatch):
    d = make_distiller("wan", embeddings_folder("wan"), tmp_path, export_dtype="fp32")
    target = tmp_path / "pytorch_lora_weights.safetensors"
    d.export_lora(target)
    before = target.read_bytes()
    written = []

    def half_written(path, state, metadata):
        written.append(path)
        path.write_bytes(b"half a LoRA")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "save_lora", half_written)
    with pytest.raises(DiskFullError, match=r"no space left on .* the LoRA needs about \d+ MB"):
        d.export_lora(target)
    assert written and written[0] != target and written[0].parent == target.parent
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [target.name]


def test_non_finite_lora_is_not_exported(embeddings_folder, tmp_path):
    d = make_distiller("wan", embeddings_folder("wan"), tmp_path)
    with torch.no_grad():
        next(p for n, p in d.models.transformer.named_parameters() if f".{STUDENT}." in n).fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="Refusing to export the student LoRA"):
        d.export_lora(tmp_path / "pytorch_lora_weights.safetensors")
    assert not list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob(".tmp-*"))
