"""Contract, on real ``python -m training.distill`` processes and real signals: SIGTERM and SIGINT write a
checkpoint of the step in progress at its end and exit with 128 + the signal number, a log line and no traceback; a
start removes what a write killed midway left behind and resumes from the newest checkpoint; one run at a time per
output folder (a second is refused naming the holder's PID; a SIGKILLed holder's stale lock is taken over with a log
line). A first signal waits for the step boundary, a second stops at once."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from cli_runs import DistillProcess, tiny_cli_args
from training_helpers import make_distiller

from training.checkpoint import list_checkpoints, read_checkpoint
from training.distill import train
from training.stop import GracefulStop, StopRequested


@pytest.fixture
def runs():
    started: list[DistillProcess] = []

    def start(args):
        started.append(DistillProcess(args))
        return started[-1]

    yield start
    for run in started:
        run.kill()


def test_signals_checkpoint_at_the_step_boundary_and_one_run_holds_a_folder(
    tiny_folder, embeddings_folder, tmp_path, runs
):
    """Four processes, overlapping where they can: ``killed`` holds folder A (a second run there is refused) and is
    SIGKILLed; ``terminated`` resumes folder B and gets SIGTERM; ``interrupted`` takes over A's stale lock, resumes
    and gets SIGINT."""
    model, emb = tiny_folder("wan"), embeddings_folder("wan")
    a, b = tmp_path / "a", tmp_path / "b"
    train(make_distiller("wan", emb, b, checkpointing_steps=2, max_train_steps=2))  # B: checkpoint-2
    # What a process killed in the middle of a write leaves behind.
    (b / "checkpoints" / ".tmp-checkpoint-999").mkdir()
    (b / "checkpoints" / ".tmp-checkpoint-999" / "lora_student.safetensors").write_bytes(b"partial")
    (b / ".tmp-4242-pytorch_lora_weights.safetensors").write_bytes(b"partial")

    killed = runs(tiny_cli_args(model, emb, a))
    terminated = runs(tiny_cli_args(model, emb, b))
    killed.wait_for(r"Holding the lock ")
    refused = runs(tiny_cli_args(model, emb, a))  # while the first run on A loads and trains

    killed.wait_for(r"Saved checkpoint .*checkpoint-2$")
    rc, log = refused.finish()
    assert rc == 1, log[-3000:]
    assert f"is in use by another training run (PID {killed.pid} on host" in log
    assert str(a / "distill.lock") in log and "Traceback" not in log
    killed.send(signal.SIGKILL)
    killed.finish()
    assert json.loads((a / "distill.lock").read_text())["pid"] == killed.pid  # left behind: stale
    step_a = read_checkpoint(list_checkpoints(a)[-1])[0].step
    interrupted = runs(tiny_cli_args(model, emb, a))

    terminated.wait_for(r"Resumed from \S+checkpoint-2 at step 2$")
    terminated.wait_for(r"Saved checkpoint .*checkpoint-4$")
    terminated.send(signal.SIGTERM)
    rc, log = terminated.finish()
    assert rc == 128 + signal.SIGTERM, log[-3000:]
    assert "SIGTERM received: stopping after this step, with a checkpoint" in log and "Traceback" not in log
    stopped = re.search(r"Stopped by SIGTERM at step (\d+) \(checkpoint (\S+)\)\. Run the same command again", log)
    assert stopped, log[-3000:]
    step = int(stopped.group(1))
    newest = list_checkpoints(b)[-1]
    assert step >= 4 and newest.name == f"checkpoint-{step}" and str(newest) == stopped.group(2)
    assert read_checkpoint(newest)[0].step == step  # complete and valid
    assert "Removed " + str(b / ".tmp-4242-pytorch_lora_weights.safetensors") in log
    assert "Removed " + str(b / "checkpoints" / ".tmp-checkpoint-999") in log
    assert not list((b / "checkpoints").glob(".tmp-*")) and not list(b.glob(".tmp-*"))
    assert not (b / "distill.lock").exists() and not (b / "pytorch_lora_weights.safetensors").exists()

    interrupted.wait_for(rf"Taking over the stale lock {re.escape(str(a / 'distill.lock'))} of PID {killed.pid}\b")
    interrupted.wait_for(rf"Resumed from \S+checkpoint-{step_a} at step {step_a}$")
    interrupted.wait_for(rf"Saved checkpoint .*checkpoint-{step_a + 2 - step_a % 2}$")  # trained after resuming
    interrupted.send(signal.SIGINT)
    rc, log = interrupted.finish()
    assert rc == 128 + signal.SIGINT, log[-3000:]
    assert "that process is gone" in log
    assert "SIGINT received: stopping after this step" in log and "Traceback" not in log
    stopped = re.search(r"Stopped by SIGINT at step (\d+)", log)
    assert stopped and int(stopped.group(1)) > step_a
    assert read_checkpoint(list_checkpoints(a)[-1])[0].step == int(stopped.group(1))
    assert not (a / "distill.lock").exists()


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # Python runs the handler in the main thread at its next instruction


def test_first_signal_waits_for_the_step_boundary_a_second_stops_at_once():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    stop = GracefulStop().install()
    try:
        with stop.deferring():
            _deliver(signal.SIGTERM)
            assert stop.signum == signal.SIGTERM and stop.agreed() == signal.SIGTERM
            with pytest.raises(StopRequested, match="SIGINT"):
                _deliver(signal.SIGINT)
        fresh = GracefulStop().install()
        with pytest.raises(StopRequested, match="SIGTERM"):  # outside a training step: at once
            _deliver(signal.SIGTERM)
        fresh.restore()
    finally:
        stop.restore()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers restored
