"""Atomic training checkpoints with full resume: both LoRAs, both optimizers and LR schedulers, RNG states, step.

A checkpoint is a folder ``checkpoint-<step>`` under ``<output_dir>/checkpoints``. It is written into a hidden
temporary folder, every file and the folder are fsync'ed, and only then renamed to its final name (rename is atomic
on POSIX), so a crash or exception mid-write leaves the previous checkpoints untouched and the partial one
invisible. ``state.json`` is written last inside the temporary folder. Optimizer and RNG states are our own files
and are read back with ``torch.load(weights_only=True)`` (no arbitrary unpickling).

In multi-process runs every rank writes its own RNG file; rank 0 writes the rest and renames. Optimizer state is
taken from rank 0, which holds the full state under DDP.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE = "state.json"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (final name and a state.json), oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE).is_file()]
    return [p for _, p in sorted(found)]


def resolve_resume(output_dir: str | Path, resume: str) -> Path | None:
    """The checkpoint to resume from: '' -> None, 'latest' -> newest complete one (or None), else that folder."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE).is_file():
        raise ValueError(f"resume={resume!r} is not a complete checkpoint folder (no {STATE}).")
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@dataclass
class TrainState:
    """What a checkpoint holds, in memory."""

    step: int
    loras: dict[str, dict[str, torch.Tensor]]  # adapter -> {parameter name: tensor}
    optimizers: dict[str, dict[str, Any]]  # adapter -> optimizer.state_dict()
    schedulers: dict[str, dict[str, Any]]  # adapter -> lr_scheduler.state_dict()
    extra: dict[str, Any]  # JSON-friendly (config, world size, ...)


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


def tmp_dir_for(output_dir: str | Path, step: int) -> Path:
    return checkpoint_root(output_dir) / f".tmp-checkpoint-{step}"


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

    Returns the final folder. Older checkpoints beyond ``keep`` are removed after the new one is complete.
    """
    root = checkpoint_root(output_dir)
    final = root / f"checkpoint-{step}"
    tmp = tmp_dir_for(output_dir, step)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)  # left over from an interrupted write
        tmp.mkdir()
    barrier()
    try:
        rng_path = tmp / f"rng_rank{rank}.pt"
        torch.save(rng, rng_path)
        _fsync_file(rng_path)
        barrier()
        if rank == 0:
            if state is None:
                raise ValueError("write_checkpoint needs the training state on rank 0.")
            for adapter, tensors in state.loras.items():
                path = tmp / f"lora_{adapter}.safetensors"
                save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
                _fsync_file(path)
            for kind, states in (("optimizer", state.optimizers), ("scheduler", state.schedulers)):
                for adapter, sd in states.items():
                    path = tmp / f"{kind}_{adapter}.pt"
                    torch.save(sd, path)
                    _fsync_file(path)
            meta = {"step": state.step, **state.extra}
            (tmp / STATE).write_text(json.dumps(meta, indent=1, default=str))
            _fsync_file(tmp / STATE)
            _fsync_dir(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            _fsync_dir(root)
            logger.info("Saved checkpoint %s", final)
            if keep:
                for old in list_checkpoints(output_dir)[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if rank == 0 and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier()
    return final


def read_checkpoint(path: str | Path, rank: int = 0) -> tuple[TrainState, dict[str, Any] | None]:
    """(state, this rank's RNG state or None when the checkpoint was written by fewer processes)."""
    path = Path(path)
    meta = json.loads((path / STATE).read_text())
    loras, optimizers, schedulers = {}, {}, {}
    for file in sorted(path.iterdir()):
        if file.name.startswith("lora_") and file.suffix == ".safetensors":
            loras[file.stem.removeprefix("lora_")] = load_file(str(file))
        elif file.name.startswith("optimizer_"):
            optimizers[file.stem.removeprefix("optimizer_")] = torch.load(file, weights_only=True)
        elif file.name.startswith("scheduler_"):
            schedulers[file.stem.removeprefix("scheduler_")] = torch.load(file, weights_only=True)
    rng_path = path / f"rng_rank{rank}.pt"
    rng = torch.load(rng_path, weights_only=True) if rng_path.is_file() else None
    step = int(meta.pop("step"))
    return TrainState(step, loras, optimizers, schedulers, meta), rng
