"""``python -m training.distill`` as a real child process whose log the tests read while it runs (for signals)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tiny_cli_args(model: Path, embeddings: Path, output_dir: Path, **overrides) -> list[str]:
    """Command-line settings of a tiny Wan distillation on the CPU (a step takes a fraction of a second)."""
    values = {
        "model": model, "prompt_embeddings": embeddings, "output_dir": output_dir, "width": 64, "height": 64,
        "frames": 5, "lora_rank": 4, "lora_alpha": 4, "train_batch_size": 1, "gradient_accumulation_steps": 1,
        "checkpointing_steps": 2, "max_train_steps": 1000, "mixed_precision": "no", "attention_backend": "torch",
        "asa_overrides": '{"block_size": 16, "num_keep": 4}', "validation_steps": 0, "export_dtype": "fp32",
    }
    values.update(overrides)
    args: list[str] = []
    for key, value in values.items():
        args += [f"--{key}", str(value)]
    return args


class DistillProcess:
    """A running ``python -m training.distill``; its stdout and stderr are collected line by line."""

    def __init__(self, args: list[str]):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "training.distill", *args], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def _read(self) -> None:
        for line in self.proc.stdout:  # text mode: tqdm's carriage returns end lines too
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 90.0) -> re.Match:
        """The first log line matching ``pattern`` (re.search); AssertionError when the process ends or time runs
        out first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                if not self._reader.is_alive():
                    raise AssertionError(f"process ended (rc {self.proc.poll()}) before {pattern!r}:\n"
                                         + "\n".join(self.lines[-40:]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} within {timeout} s:\n" + "\n".join(self.lines[-40:]))
                self._changed.wait(min(left, 0.5))

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 90.0) -> tuple[int, str]:
        """Wait for the process to end: (exit status, everything it wrote)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"still running after {timeout} s:\n{self.output[-4000:]}") from None
        self._reader.join(10)
        return rc, self.output

    def kill(self) -> None:
        """Make sure the process is gone (test clean-up)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
