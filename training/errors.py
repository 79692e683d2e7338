"""Errors of a distillation run that the user fixes (not bugs): ``python -m training.distill`` logs their message
without a traceback and exits with status 1."""

from __future__ import annotations

import errno
from pathlib import Path


class TrainingError(Exception):
    """Base class: the message says what is wrong and what to do."""


class CheckpointError(TrainingError, ValueError):
    """A checkpoint folder that cannot be resumed from. The message names the folder, the file and why."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NoUsableCheckpointError(TrainingError):
    """``resume='latest'`` found checkpoints, but every one of them is damaged or incomplete."""


class ResumeConflictError(TrainingError, ValueError):
    """The run asks for settings that contradict the checkpoint (or the output folder) it would continue."""


class OutputDirInUseError(TrainingError):
    """Another live training run holds the output folder's lock."""


class NonFiniteLossError(TrainingError, FloatingPointError):
    """A training step produced non-finite losses or gradients; nothing of that step was saved."""

    def __init__(self, step: int, message: str):
        self.step = step
        super().__init__(message)


class DiskFullError(OSError, TrainingError):
    """Writing a checkpoint or the LoRA ran out of space; the message says where and how much is needed."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror
