"""One run per output folder: its lock, the leftovers of interrupted writes, and what a start may find there.

- Lock: ``<output_dir>/distill.lock`` names the holder (PID, host, start time) and is held with ``flock`` while the
  run lives, so the kernel releases it when the process dies, however it dies. A lock file whose holder is gone is
  stale: the next run takes it over and logs whose it was. A live holder makes the next run stop at once, naming it.
- Leftovers: ``checkpoints/.tmp-checkpoint-<step>`` folders and ``.tmp-<pid>-<name>`` files of a process killed
  mid-write are removed at the next start.
- A fresh start (``resume=''``) in a folder that holds an earlier run's checkpoints or LoRA is refused: its
  checkpoints would mix with the new run's (keep-N would count them, ``resume=latest`` would pick them).
- After resuming from step S, checkpoints with a higher step (skipped as damaged, or a later point of the run when an
  older checkpoint was named) are set aside as ``checkpoints/skipped-checkpoint-<step>``, so that neither keep-N nor
  the next ``resume=latest`` confuses them with this run's own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from .checkpoint import TMP_PREFIX, checkpoint_root, checkpoint_step, list_checkpoints
from .durable import TEMP_PREFIX
from .errors import OutputDirInUseError, ResumeConflictError

logger = logging.getLogger(__name__)

LOCK_NAME = "distill.lock"
EXPORT_NAME = "pytorch_lora_weights.safetensors"
SKIPPED_PREFIX = "skipped-"


def _describe_holder(info: dict) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"PID {info.get('pid', '?')} on host {info.get('host', '?')}, started {when}"


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Hold ``<output_dir>/distill.lock`` for the life of a run (a context manager; :meth:`release` is idempotent)."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = self._read(fd)
                os.close(fd)
                raise OutputDirInUseError(
                    f"{self.path.parent} is in use by another training run ({_describe_holder(info)}; lock file "
                    f"{self.path}). Wait for it to finish or stop it, or use another output_dir."
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # The previous holder may have removed the file between our open and our flock: lock the file that
            # is at the path now.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._read(fd)
        if previous:
            alive = previous.get("host") == socket.gethostname() and _pid_alive(previous.get("pid"))
            logger.warning(
                "Taking over the stale lock %s of %s: %s.", self.path, _describe_holder(previous),
                "that PID is now another process" if alive else "that process is gone",
            )
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "argv": sys.argv}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        logger.info("Holding the lock %s (PID %d): one run at a time in this folder.", self.path, os.getpid())
        return self

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            data = os.pread(fd, 65536, 0)
            info = json.loads(data) if data.strip() else {}
        except (OSError, ValueError):
            return {"pid": "unreadable"}
        return info if isinstance(info, dict) else {}

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still locked: a waiting opener re-checks the inode and retries
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def clean_leftovers(output_dir: str | Path) -> list[Path]:
    """Remove temporary checkpoint folders and temporary files of interrupted writes; returns what was removed."""
    out = Path(output_dir)
    removed: list[Path] = []
    candidates = []
    root = checkpoint_root(out)
    if root.is_dir():
        candidates += [p for p in root.iterdir() if p.name.startswith(TMP_PREFIX)]
    if out.is_dir():
        candidates += [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX) and p.is_file()]
    for path in sorted(candidates):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        logger.info("Removed %s, left over from an interrupted write.", path)
        removed.append(path)
    return removed


def check_fresh_start(output_dir: str | Path) -> None:
    """``resume=''`` starts a new run: refuse when ``output_dir`` holds an earlier run's checkpoints or LoRA."""
    out = Path(output_dir)
    found = list_checkpoints(out)
    lora = out / EXPORT_NAME
    if not found and not lora.is_file():
        return
    held = []
    if found:
        names = ", ".join(p.name for p in found)
        held.append(f"checkpoints {names} (newest step {checkpoint_step(found[-1])})")
    if lora.is_file():
        held.append(f"the exported LoRA {EXPORT_NAME}")
    raise ResumeConflictError(
        f"resume='' starts a new run, but output_dir {out} holds an earlier run: {' and '.join(held)}. A new run "
        "there would mix its checkpoints with those. Continue that run (resume=latest, the default), give the new "
        f"run another output_dir, or move {checkpoint_root(out)} and the LoRA away to start over in {out}."
    )


def set_aside_newer(output_dir: str | Path, step: int) -> list[Path]:
    """Rename checkpoints newer than ``step`` to ``skipped-checkpoint-<step>`` (never deleted); returns new paths."""
    moved = []
    for path in list_checkpoints(output_dir):
        if checkpoint_step(path) <= step:
            continue
        target = path.with_name(SKIPPED_PREFIX + path.name)
        n = 1
        while target.exists():
            n += 1
            target = path.with_name(f"{SKIPPED_PREFIX}{path.name}-{n}")
        path.rename(target)
        logger.warning("Set %s aside as %s: the run goes on from step %d and writes its own.", path.name,
                       target.name, step)
        moved.append(target)
    return moved
