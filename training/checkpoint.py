"""Atomic, verified training checkpoints with full resume: both LoRAs, both optimizers and LR schedulers, RNG states,
step.

A checkpoint is a folder ``checkpoint-<step>`` under ``<output_dir>/checkpoints``. It is written into a hidden
temporary folder (``.tmp-checkpoint-<step>``), every file and the folder are fsync'ed, and only then renamed to its
final name (rename is atomic on POSIX), so a crash or exception mid-write leaves the previous checkpoints untouched
and the partial one invisible. ``manifest.json`` is written last: every other file with its size and SHA-256, and
the step. Optimizer and RNG states are our own files and are read back with ``torch.load(weights_only=True)`` (no
arbitrary unpickling).

Reading a checkpoint checks everything before any of it is used: the manifest is there, every file it lists has its
size and checksum, the step of ``state.json`` and of the manifest is the folder's, every LoRA weight and optimizer
state is finite. Anything else is a :class:`~training.errors.CheckpointError` naming the file and the reason, and
``resume='latest'`` falls back to the newest checkpoint that passes, logging each one it skipped.

In multi-process runs every rank writes its own RNG file; rank 0 writes the rest, the manifest, and renames.
Optimizer state is taken from rank 0, which holds the full state under DDP.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .durable import disk_full_error, fsync_dir, is_disk_full, write_durably
from .errors import CheckpointError, NonFiniteLossError, NoUsableCheckpointError

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE = "state.json"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
TMP_PREFIX = ".tmp-checkpoint-"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_step(path: str | Path) -> int | None:
    """The step in a ``checkpoint-<step>`` folder name, None for any other name."""
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Folders named ``checkpoint-<step>``, oldest first, complete or not (:func:`read_checkpoint` tells)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(step, p) for p in root.iterdir() if (step := checkpoint_step(p)) is not None and p.is_dir()]
    return [p for _, p in sorted(found)]


def tmp_dir_for(output_dir: str | Path, step: int) -> Path:
    return checkpoint_root(output_dir) / f"{TMP_PREFIX}{step}"


@dataclass
class TrainState:
    """What a checkpoint holds, in memory."""

    step: int
    loras: dict[str, dict[str, torch.Tensor]]  # adapter -> {parameter name: tensor}
    optimizers: dict[str, dict[str, Any]]  # adapter -> optimizer.state_dict()
    schedulers: dict[str, dict[str, Any]]  # adapter -> lr_scheduler.state_dict()
    extra: dict[str, Any]  # JSON-friendly (config, world size, ...)


@dataclass
class LoadedCheckpoint:
    path: Path
    state: TrainState
    rng: dict[str, Any] | None  # this rank's RNG state; None when the checkpoint was written by fewer processes


def rng_state() -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """Global torch RNG states (used by ASA's sampled estimate); the TDM draws come from per-sample generators."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- checks shared by writing and reading -------------------------------------------------------------------------
def non_finite(obj: Any, where: str = "") -> str | None:
    """Where in ``obj`` (tensors, floats, nested dicts/lists) the first NaN or infinity sits, or None."""
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            return where or "tensor"
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            return where or "value"
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if (found := non_finite(value, f"{where}/{key}" if where else str(key))) is not None:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            if (found := non_finite(value, f"{where}[{i}]")) is not None:
                return found
    return None


def _state_files(state: TrainState) -> dict[str, Any]:
    """The files rank 0 writes for ``state`` (besides state.json and the manifest) and what goes into each."""
    files: dict[str, Any] = {f"lora_{a}.safetensors": t for a, t in state.loras.items()}
    files.update({f"optimizer_{a}.pt": sd for a, sd in state.optimizers.items()})
    files.update({f"scheduler_{a}.pt": sd for a, sd in state.schedulers.items()})
    return files


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def checkpoint_bytes(state: TrainState | None, rng: dict[str, Any] | None = None) -> int:
    """About how many bytes a checkpoint of ``state`` takes on disk (tensors plus a little for the file formats)."""
    tensors = _tensor_bytes(rng) + (_tensor_bytes(_state_files(state)) if state is not None else 0)
    return tensors + 64 * 1024


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _entry(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# ---- writing ------------------------------------------------------------------------------------------------------
def write_checkpoint(
    output_dir: str | Path,
    step: int,
    state: TrainState | None,
    rng: dict[str, Any],
    *,
    rank: int = 0,
    barrier: Callable[[], None] = lambda: None,
    keep: int | None = None,
) -> Path:
    """Write ``checkpoint-<step>`` atomically; every rank calls this (``state`` is needed on rank 0 only).

    Returns the final folder. Once the new one is complete, older checkpoints of this run beyond ``keep`` (counting
    the new one) are removed; a checkpoint with a higher step than ``step`` is never touched. Running out of disk
    space raises :class:`~training.errors.DiskFullError` saying how much a checkpoint needs.
    """
    root = checkpoint_root(output_dir)
    final = root / f"checkpoint-{step}"
    tmp = tmp_dir_for(output_dir, step)
    if rank == 0:
        if state is None:
            raise ValueError("write_checkpoint needs the training state on rank 0.")
        if state.step != step:
            raise ValueError(f"write_checkpoint(step={step}) got the state of step {state.step}.")
        for name, content in _state_files(state).items():
            if (where := non_finite(content)) is not None:
                raise NonFiniteLossError(
                    step, f"Refusing to save checkpoint-{step}: {name} holds a non-finite value at {where}."
                )
    try:
        if rank == 0:
            root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)  # left over from an interrupted write
            tmp.mkdir()
        barrier()
        write_durably(tmp / f"rng_rank{rank}.pt", _torch_bytes(rng))
        barrier()
        if rank == 0:
            _write_rank0_files(tmp, state)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            fsync_dir(root)
            logger.info("Saved checkpoint %s", final)
            if keep:
                _prune(output_dir, step, keep)
    except BaseException as err:
        if rank == 0 and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and is_disk_full(err):
            raise disk_full_error(err, root, checkpoint_bytes(state, rng), "a checkpoint") from err
        raise
    barrier()
    return final


def _write_rank0_files(tmp: Path, state: TrainState) -> None:
    """LoRAs, optimizer and scheduler states, state.json, then the manifest of every file in ``tmp``."""
    files: dict[str, dict[str, Any]] = {}
    for name, content in _state_files(state).items():
        if name.endswith(".safetensors"):
            data = save_safetensors({k: v.detach().cpu().contiguous() for k, v in content.items()})
        else:
            data = _torch_bytes(content)
        write_durably(tmp / name, data)
        files[name] = _entry(data)
        del data
    meta = json.dumps({"step": state.step, **state.extra}, indent=1, default=str).encode()
    write_durably(tmp / STATE, meta)
    files[STATE] = _entry(meta)
    for rng_file in sorted(tmp.glob("rng_rank*.pt")):  # every rank's, written before the barrier
        files[rng_file.name] = _entry(rng_file.read_bytes())
    manifest = {"format": MANIFEST_FORMAT, "step": state.step, "files": dict(sorted(files.items()))}
    write_durably(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
    fsync_dir(tmp)


def _prune(output_dir: str | Path, step: int, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints up to ``step`` (the one just written among them)."""
    older = [p for p in list_checkpoints(output_dir) if checkpoint_step(p) < step]
    for old in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)


# ---- reading ------------------------------------------------------------------------------------------------------
def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not file.is_file():
        raise CheckpointError(path, f"{MANIFEST} is missing: the checkpoint is incomplete or was written by an "
                                    "older version")
    try:
        manifest = json.loads(file.read_text())
        files = manifest["files"]
        int(manifest["step"])
        if not isinstance(files, dict) or not all(isinstance(e, dict) and {"size", "sha256"} <= set(e)
                                                  for e in files.values()):
            raise TypeError("bad file list")
        if any(Path(name).name != name or name.startswith(".") for name in files):
            raise ValueError("a file name outside the folder")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(path, f"{MANIFEST} is damaged ({err})") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(path, f"{MANIFEST} has format {manifest.get('format')!r}; this version reads "
                                    f"{MANIFEST_FORMAT}")
    return manifest


def _verified_bytes(path: Path, name: str, entry: dict[str, Any]) -> bytes:
    file = path / name
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(path, f"{name} is missing") from None
    except OSError as err:
        raise CheckpointError(path, f"{name} cannot be read ({err})") from None
    if len(data) != entry["size"]:
        raise CheckpointError(path, f"{name} has {len(data)} bytes, the manifest says {entry['size']} (truncated "
                                    "or overwritten)")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CheckpointError(path, f"{name} does not match its checksum in the manifest (damaged)")
    return data


def _parse(path: Path, name: str, data: bytes) -> Any:
    try:
        if name.endswith(".safetensors"):
            return load_safetensors(data)
        if name.endswith(".json"):
            return json.loads(data)
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as err:  # every reader's own error type (SafetensorError, UnpicklingError, ...): name the file
        raise CheckpointError(path, f"{name} cannot be read ({type(err).__name__}: {err})") from None


def read_checkpoint(
    path: str | Path, rank: int = 0, require: Iterable[str] = ()
) -> tuple[TrainState, dict[str, Any] | None]:
    """(state, this rank's RNG state or None when the checkpoint was written by fewer processes).

    Verifies the whole checkpoint first (see the module docstring); ``require`` names adapters whose LoRA,
    optimizer and scheduler files must be there. Raises CheckpointError naming the file and the reason.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(path, "is not a checkpoint folder")
    manifest = _read_manifest(path)
    files: dict[str, dict[str, Any]] = manifest["files"]
    for adapter in require:
        for name in (f"lora_{adapter}.safetensors", f"optimizer_{adapter}.pt", f"scheduler_{adapter}.pt"):
            if name not in files:
                raise CheckpointError(path, f"{name} is not in the checkpoint (its manifest lists "
                                            f"{', '.join(sorted(files))})")
    if STATE not in files:
        raise CheckpointError(path, f"{STATE} is not in the checkpoint's manifest")
    folder_step, manifest_step = checkpoint_step(path), int(manifest["step"])
    if folder_step is not None and manifest_step != folder_step:
        raise CheckpointError(path, f"{MANIFEST} says step {manifest_step}, the folder name step {folder_step}")
    loras, optimizers, schedulers = {}, {}, {}
    meta: dict[str, Any] = {}
    rng = None
    for name, entry in files.items():
        data = _verified_bytes(path, name, entry)
        if name.startswith("rng_rank") and name != f"rng_rank{rank}.pt":
            continue  # another process's: checked, not needed here
        value = _parse(path, name, data)
        del data
        if name == STATE:
            meta = value
        elif name.startswith("lora_") and name.endswith(".safetensors"):
            loras[name.removeprefix("lora_").removesuffix(".safetensors")] = value
        elif name.startswith("optimizer_"):
            optimizers[name.removeprefix("optimizer_").removesuffix(".pt")] = value
        elif name.startswith("scheduler_"):
            schedulers[name.removeprefix("scheduler_").removesuffix(".pt")] = value
        elif name.startswith("rng_rank"):
            rng = value
        if name != STATE and (where := non_finite(value)) is not None:
            raise CheckpointError(path, f"{name} holds a non-finite value at {where}")
    try:
        step = int(meta.pop("step"))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CheckpointError(path, f"{STATE} has no valid step") from None
    if step != manifest_step:
        raise CheckpointError(path, f"{STATE} says step {step}, the folder and its manifest step {manifest_step}")
    return TrainState(step, loras, optimizers, schedulers, meta), rng


def load_latest(output_dir: str | Path, rank: int = 0, require: Iterable[str] = ()) -> LoadedCheckpoint | None:
    """The newest checkpoint of ``output_dir`` that reads back whole, or None when there is none.

    Each newer one that fails is logged with the reason and skipped. When checkpoints exist but none can be read,
    raises NoUsableCheckpointError listing why.
    """
    require = tuple(require)
    problems: list[str] = []
    for path in reversed(list_checkpoints(output_dir)):
        try:
            state, rng = read_checkpoint(path, rank, require)
        except CheckpointError as err:
            logger.warning("Skipping checkpoint %s: %s.", path.name, err.reason)
            problems.append(f"{path.name}: {err.reason}")
            continue
        if problems:
            logger.warning("Resuming from %s, the newest complete checkpoint (skipped: %s).", path.name,
                           "; ".join(problems))
        return LoadedCheckpoint(path, state, rng)
    if problems:
        root = checkpoint_root(output_dir)
        raise NoUsableCheckpointError(
            f"No checkpoint in {root} can be resumed from ({'; '.join(problems)}). To start this run over, move "
            f"{root} away (or use another output_dir) and run the same command again."
        )
    return None


def resolve_resume(output_dir: str | Path, resume: str) -> Path | None:
    """The checkpoint to resume from: '' -> None, 'latest' -> the newest complete, valid one (or None), else that
    folder, which must be complete and valid (CheckpointError otherwise)."""
    if not resume:
        return None
    if resume == "latest":
        loaded = load_latest(output_dir)
        return loaded.path if loaded is not None else None
    path = Path(resume)
    read_checkpoint(path)
    return path
