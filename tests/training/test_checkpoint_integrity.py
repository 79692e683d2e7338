"""Contract: resume checks what it loads. Every checkpoint carries a manifest (files, sizes, SHA-256, step) written
last; a damaged, incomplete, non-finite or mislabelled newest checkpoint is skipped with a log line naming the file,
and the newest valid one is used; a step whose losses turn non-finite stops the run naming the step; keep-N never
deletes the checkpoint just written; a full disk says where and how much a checkpoint needs."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from training_helpers import make_distiller

from training import checkpoint
from training.checkpoint import (
    MANIFEST,
    list_checkpoints,
    load_latest,
    read_checkpoint,
    resolve_resume,
    rng_state,
    write_checkpoint,
)
from training.distill import train
from training.errors import CheckpointError, DiskFullError, NonFiniteLossError, NoUsableCheckpointError
from training.models import ADAPTERS, STUDENT


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, embeddings_folder):
    """An output folder with checkpoint-1 and checkpoint-2 of the tiny Wan distillation (copied per test)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    out = tmp_path_factory.mktemp("two_checkpoints")
    d = make_distiller("wan", embeddings_folder("wan"), out, checkpointing_steps=1, max_train_steps=2)
    train(d)
    AcceleratorState._reset_state(reset_partial_state=True)
    return out


@pytest.fixture
def run_dir(two_checkpoints, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    return out


def _resign(folder: Path) -> None:
    """Rewrite the manifest for the files as they are now (a change made by something that also updated it)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    for name in manifest["files"]:
        data = (folder / name).read_bytes()
        manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _truncate(folder: Path, name: str) -> None:
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])


def _flip_bytes(folder: Path, name: str) -> None:
    data = bytearray((folder / name).read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    (folder / name).write_bytes(bytes(data))


def _nan_in_lora(folder: Path, name: str) -> None:
    tensors = load_file(folder / name)
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, str(folder / name))
    _resign(folder)


def _nan_in_optimizer(folder: Path, name: str) -> None:
    state = torch.load(folder / name, weights_only=True)
    first = next(iter(state["state"].values()))
    first["exp_avg_sq"].view(-1)[0] = float("inf")
    torch.save(state, folder / name)
    _resign(folder)


def _state_step(folder: Path, name: str) -> None:
    meta = json.loads((folder / name).read_text())
    meta["step"] = 7
    (folder / name).write_text(json.dumps(meta))
    _resign(folder)


def _delete(folder: Path, name: str) -> None:
    (folder / name).unlink()


def _garbage(folder: Path, name: str) -> None:
    (folder / name).write_text("{not json")


DAMAGE = {
    "truncated_lora": (_truncate, "lora_student.safetensors",
                       r"lora_student.safetensors has \d+ bytes, the manifest says \d+"),
    "missing_optimizer": (_delete, "optimizer_fake.pt", "optimizer_fake.pt is missing"),
    "flipped_optimizer_bytes": (_flip_bytes, "optimizer_student.pt",
                                "optimizer_student.pt does not match its checksum"),
    "missing_state": (_delete, "state.json", "state.json is missing"),
    "missing_manifest": (_delete, MANIFEST, "manifest.json is missing"),
    "garbage_manifest": (_garbage, MANIFEST, "manifest.json is damaged"),
    "nan_lora_weight": (_nan_in_lora, "lora_student.safetensors", "lora_student.safetensors holds a non-finite"),
    "inf_optimizer_state": (_nan_in_optimizer, "optimizer_fake.pt", "optimizer_fake.pt holds a non-finite value at "
                                                                   r"state/\d+/exp_avg_sq"),
    "state_step_disagrees": (_state_step, "state.json", "state.json says step 7"),
}


def test_manifest_lists_every_file_and_is_written_last(run_dir):
    folder = list_checkpoints(run_dir)[-1]
    manifest = json.loads((folder / MANIFEST).read_text())
    on_disk = {p.name for p in folder.iterdir()} - {MANIFEST}
    assert manifest["step"] == 2 and set(manifest["files"]) == on_disk
    assert {"state.json", "rng_rank0.pt", "lora_student.safetensors", "optimizer_fake.pt"} <= on_disk
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(run_dir, damage, caplog):
    how, name, reason = DAMAGE[damage]
    how(run_dir / "checkpoints" / "checkpoint-2", name)
    with caplog.at_level(logging.WARNING, logger="training.checkpoint"):
        loaded = load_latest(run_dir, require=ADAPTERS)
    assert loaded.path.name == "checkpoint-1" and loaded.state.step == 1
    skipped = [r.getMessage() for r in caplog.records if "Skipping checkpoint checkpoint-2" in r.getMessage()]
    assert len(skipped) == 1
    assert re.search(reason, skipped[0]), skipped[0]
    with pytest.raises(CheckpointError, match=reason):  # named explicitly, it is refused rather than used
        read_checkpoint(run_dir / "checkpoints" / "checkpoint-2", require=ADAPTERS)


def test_step_in_folder_name_must_match(run_dir):
    root = run_dir / "checkpoints"
    (root / "checkpoint-2").rename(root / "checkpoint-5")
    with pytest.raises(CheckpointError, match="manifest.json says step 2, the folder name step 5"):
        read_checkpoint(root / "checkpoint-5")
    assert load_latest(run_dir).path.name == "checkpoint-1"


def test_distiller_resumes_from_the_newest_valid_checkpoint(run_dir, embeddings_folder):
    _flip_bytes(run_dir / "checkpoints" / "checkpoint-2", "lora_fake.safetensors")
    d = make_distiller("wan", embeddings_folder("wan"), run_dir, checkpointing_steps=1, max_train_steps=2)
    assert d.resume("latest").name == "checkpoint-1" and d.step == 1
    expected = load_file(run_dir / "checkpoints" / "checkpoint-1" / "lora_student.safetensors")
    assert all(torch.equal(v, expected[k]) for k, v in d.lora_tensors(STUDENT).items())
    with pytest.raises(CheckpointError, match="lora_fake.safetensors does not match its checksum"):
        d.resume(str(run_dir / "checkpoints" / "checkpoint-2"))
    assert d.step == 1  # nothing of the refused checkpoint was applied


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(run_dir):
    for folder in list_checkpoints(run_dir):
        _delete(folder, "rng_rank0.pt")
    with pytest.raises(NoUsableCheckpointError, match=r"checkpoint-2: rng_rank0.pt is missing; checkpoint-1: "):
        resolve_resume(run_dir, "latest")


def test_non_finite_loss_stops_the_run_naming_the_step(embeddings_folder, tmp_path):
    d = make_distiller("wan", embeddings_folder("wan"), tmp_path, checkpointing_steps=1, max_train_steps=4)
    train(d, 1)
    with torch.no_grad():
        name, param = next((n, p) for n, p in d.models.transformer.named_parameters()
                           if f".{STUDENT}." in n and "lora_B" in n)
        param.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"Step 2 of 4 produced non-finite values \(loss_fake nan"):
        train(d)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1"]  # nothing of step 2 was saved
    with pytest.raises(NonFiniteLossError, match="lora_student.safetensors holds a non-finite value"):
        d.step = 2
        d.save_checkpoint()
    assert not (tmp_path / "checkpoints" / "checkpoint-2").exists()


def test_keep_n_never_deletes_the_checkpoint_just_written(run_dir):
    """A newer folder (damaged, or another run's) must not count as this run's: keep=1 keeps the new one."""
    root = run_dir / "checkpoints"
    shutil.copytree(root / "checkpoint-2", root / "checkpoint-9")
    state, rng = read_checkpoint(root / "checkpoint-1")
    shutil.rmtree(root / "checkpoint-2")
    state.step = 2
    write_checkpoint(run_dir, 2, state, rng, keep=1)
    assert [p.name for p in list_checkpoints(run_dir)] == ["checkpoint-2", "checkpoint-9"]


def _dev_full_available() -> bool:
    return Path("/dev/full").is_char_device()


@pytest.mark.skipif(not _dev_full_available(), reason="needs /dev/full")
def test_disk_full_says_where_and_how_much(run_dir, monkeypatch):
    """Real ENOSPC (a write to /dev/full) and torch.save's real "unexpected pos" error both become DiskFullError."""
    state, rng = read_checkpoint(run_dir / "checkpoints" / "checkpoint-2")
    real_write = checkpoint.write_durably
    monkeypatch.setattr(checkpoint, "write_durably", lambda path, data: real_write("/dev/full", data))
    with pytest.raises(DiskFullError, match=r"no space left on .* a checkpoint needs about \d+ MB") as err:
        write_checkpoint(run_dir, 3, _with_step(state, 3), rng)
    assert str(run_dir / "checkpoints") in str(err.value)
    assert not (run_dir / "checkpoints" / ".tmp-checkpoint-3").exists()

    try:
        torch.save({"x": torch.zeros(50_000)}, "/dev/full")
    except RuntimeError as real:
        torch_error = real
    else:  # pragma: no cover - a torch that reports a full disk differently
        pytest.skip("torch.save to /dev/full raised nothing")

    def torch_full(path, data):
        raise torch_error

    monkeypatch.setattr(checkpoint, "write_durably", torch_full)
    with pytest.raises(DiskFullError, match=r"a checkpoint needs about \d+ MB"):
        write_checkpoint(run_dir, 3, _with_step(state, 3), rng_state())


def _with_step(state, step):
    state.step = step
    return state
