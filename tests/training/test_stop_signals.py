"""Contract: SIGTERM and SIGINT sent to a real ``python -m training.distill`` write a checkpoint of the step in
progress at its end and exit with 128 + the signal number, a log line and no traceback; a start removes what a write
killed midway left behind and resumes from the newest checkpoint. (The two runs overlap to keep the test short.)"""

from __future__ import annotations

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


def test_sigterm_and_sigint_checkpoint_at_the_step_boundary(tiny_folder, embeddings_folder, tmp_path, runs):
    model, emb = tiny_folder("wan"), embeddings_folder("wan")
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    train(make_distiller("wan", emb, resumed, checkpointing_steps=2, max_train_steps=2))  # checkpoint-2
    # What a process killed in the middle of a write leaves behind.
    (resumed / "checkpoints" / ".tmp-checkpoint-999").mkdir()
    (resumed / "checkpoints" / ".tmp-checkpoint-999" / "lora_student.safetensors").write_bytes(b"partial")
    (resumed / ".tmp-4242-pytorch_lora_weights.safetensors").write_bytes(b"partial")

    terminated = runs(tiny_cli_args(model, emb, fresh))
    interrupted = runs(tiny_cli_args(model, emb, resumed))

    terminated.wait_for(r"Saved checkpoint .*checkpoint-2$")
    terminated.send(signal.SIGTERM)
    rc, log = terminated.finish()
    assert rc == 128 + signal.SIGTERM, log[-3000:]
    assert "SIGTERM received: stopping after this step, with a checkpoint" in log
    stopped = re.search(r"Stopped by SIGTERM at step (\d+) \(checkpoint (\S+)\)\. Run the same command again", log)
    assert stopped, log[-3000:]
    step = int(stopped.group(1))
    assert "Traceback" not in log and step >= 2
    newest = list_checkpoints(fresh)[-1]
    assert newest.name == f"checkpoint-{step}" and str(newest) == stopped.group(2)
    assert read_checkpoint(newest)[0].step == step  # complete and valid
    assert not (fresh / "distill.lock").exists() and not (fresh / "pytorch_lora_weights.safetensors").exists()
    again = make_distiller("wan", emb, fresh, max_train_steps=1000)
    assert again.resume("latest") == newest and again.step == step

    interrupted.wait_for(r"Resumed from \S+checkpoint-2 at step 2$")
    interrupted.wait_for(r"Saved checkpoint .*checkpoint-4$")
    interrupted.send(signal.SIGINT)
    rc, log = interrupted.finish()
    assert rc == 128 + signal.SIGINT, log[-3000:]
    assert "Removed " + str(resumed / ".tmp-4242-pytorch_lora_weights.safetensors") in log
    assert "Removed " + str(resumed / "checkpoints" / ".tmp-checkpoint-999") in log
    assert not list((resumed / "checkpoints").glob(".tmp-*")) and not list(resumed.glob(".tmp-*"))
    assert "SIGINT received: stopping after this step" in log and "Traceback" not in log
    stopped = re.search(r"Stopped by SIGINT at step (\d+)", log)
    assert stopped and int(stopped.group(1)) >= 4
    assert read_checkpoint(list_checkpoints(resumed)[-1])[0].step == int(stopped.group(1))


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
