"""Durable, atomic writes for checkpoints and the exported LoRA, and disk-full errors that say how much is needed.

A file is written under a temporary name in its own folder (``.tmp-<pid>-<name>``), flushed and fsync'ed, then
renamed over its final name (``os.replace`` is atomic on POSIX) and the folder is fsync'ed: a reader sees the old
file or the complete new one, never a part. Leftover temporary names (a process killed mid-write) are removed by
:func:`training.run_dir.clean_leftovers` at the next start.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import DiskFullError

TEMP_PREFIX = ".tmp-"
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# What libraries report when the disk fills under them: torch.save's zip writer ("unexpected pos 54080 vs 53968",
# "PytorchStreamWriter failed writing file ...: file write failed") and safetensors' writer ("No space left on
# device (os error 28)").
_DISK_FULL_WORDS = ("unexpected pos", "file write failed", "no space left", "os error 28", "storagefull",
                    "disk quota exceeded")


def is_disk_full(err: BaseException) -> bool:
    """True when ``err`` (or an error it was raised from) means the file system ran out of space."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DiskFullError):
            return True
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(err, (RuntimeError, OSError, ValueError)) or type(err).__name__ == "SafetensorError":
            text = str(err).lower()
            if any(word in text for word in _DISK_FULL_WORDS):
                return True
        err = err.__cause__ or err.__context__
    return False


def _existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_point(path: str | Path) -> Path:
    """The mount point (the device's top folder) of ``path`` or of its nearest existing parent."""
    path = _existing(Path(path))
    device = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def megabytes(n_bytes: int) -> int:
    return max(1, math.ceil(n_bytes / 2**20))


def disk_full_error(err: BaseException, folder: str | Path, needed_bytes: int, what: str) -> DiskFullError:
    """A DiskFullError for ``err`` naming the device, the folder, what was written and about how much it needs."""
    folder = Path(os.path.abspath(folder))
    try:
        free = f"{shutil.disk_usage(_existing(folder)).free // 2**20} MB are free there"
        device = mount_point(folder)
    except OSError:
        free, device = "free space unknown", folder
    return DiskFullError(
        f"no space left on {device} (writing {folder}); {what} needs about {megabytes(needed_bytes)} MB and {free}. "
        f"Free some space or set output_dir to a folder on another disk, then run the same command again "
        f"(original error: {err})."
    )


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_durably(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (the caller makes the folder's entry durable)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block has written it, fsync it and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
