"""SIGTERM and SIGINT (Ctrl-C) stop a run cleanly: at the next step boundary, after a checkpoint.

While training, the first signal only records itself; ``train()`` sees it at the end of the step (all processes of
a multi-process run agree on it there), writes a checkpoint and raises :class:`TrainingStopped`. Outside the training
loop (loading, export) or at a second signal, :class:`StopRequested` is raised at once: nothing is half-written (a
checkpoint is written into a temporary folder and renamed). ``python -m training.distill`` exits with 128 + the
signal number (130 for SIGINT, 143 for SIGTERM), the shell's convention for "ended by a signal".
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    return signal.Signals(int(signum)).name


class StopRequested(BaseException):
    """A stop signal arrived; a BaseException so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = int(signum)
        super().__init__(message or f"stopped by {signal.Signals(self.signum).name}")


class TrainingStopped(StopRequested):
    """``train()`` stopped at a step boundary on a signal; ``checkpoint`` holds that step (None before any step)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.step = step
        self.checkpoint = checkpoint
        where = f"saved {checkpoint}" if checkpoint is not None else "no step trained since the last checkpoint"
        super().__init__(signum, f"stopped by {signal.Signals(int(signum)).name} at step {step} ({where})")


class GracefulStop:
    """Signal handlers for one run: install them, then wrap the training loop in :meth:`deferring`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._defer = False
        self._previous: dict[int, object] = {}

    def install(self) -> GracefulStop:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> GracefulStop:
        return self.install()

    def __exit__(self, *exc) -> bool:
        self.restore()
        return False

    @contextlib.contextmanager
    def deferring(self) -> Iterator[GracefulStop]:
        """Inside: a first signal waits for the step boundary; outside, signals stop at once."""
        self._defer = True
        try:
            yield self
        finally:
            self._defer = False

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self._defer and self.signum is None:
            self.signum = signum
            logger.warning("%s received: stopping after this step, with a checkpoint (send it again to stop at once, "
                           "without one).", name)
            return
        self.signum = self.signum or signum
        raise StopRequested(signum, f"stopped by {name}")

    def agreed(self, accelerator=None) -> int | None:
        """The signal to stop on, agreed by every process (the highest number any of them received), or None."""
        mine = self.signum or 0
        if accelerator is not None and accelerator.num_processes > 1 and torch.distributed.is_initialized():
            flag = torch.tensor([mine], device=accelerator.device, dtype=torch.int64)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            mine = int(flag.item())
        return mine or None
