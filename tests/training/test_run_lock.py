"""Contract: one run per output folder. A second ``python -m training.distill`` on a folder in use stops at once
naming the holder's PID; after the holder is killed with SIGKILL its lock is stale and the next run takes it over with
a log line, resumes and finishes. A fresh start (resume='') in a folder holding an earlier run is refused, saying
what is there and what to do."""

from __future__ import annotations

import json
import logging
import signal

import pytest
from cli_runs import DistillProcess, tiny_cli_args
from training_helpers import make_distiller

from blade_ops.lora import read_lora
from training.checkpoint import list_checkpoints
from training.distill import main, train
from training.errors import OutputDirInUseError
from training.run_dir import RunLock


@pytest.fixture
def runs():
    started: list[DistillProcess] = []

    def start(args):
        started.append(DistillProcess(args))
        return started[-1]

    yield start
    for run in started:
        run.kill()


def test_second_run_is_refused_and_a_killed_runs_lock_is_taken_over(tiny_folder, embeddings_folder, tmp_path, runs):
    out = tmp_path / "out"
    args = tiny_cli_args(tiny_folder("wan"), embeddings_folder("wan"), out)
    holder = runs(args)
    holder.wait_for(r"Holding the lock ")
    second = runs(args)  # starts while the holder loads and trains
    holder.wait_for(r"Saved checkpoint .*checkpoint-2$")

    rc, log = second.finish()
    assert rc == 1, log[-3000:]
    assert f"is in use by another training run (PID {holder.pid} on host" in log
    assert str(out / "distill.lock") in log and "Traceback" not in log

    holder.send(signal.SIGKILL)
    holder.finish()
    assert json.loads((out / "distill.lock").read_text())["pid"] == holder.pid  # left behind: stale
    step = int(list_checkpoints(out)[-1].name.split("-")[1])

    rc, log = runs(tiny_cli_args(tiny_folder("wan"), embeddings_folder("wan"), out, max_train_steps=step + 1)).finish()
    assert rc == 0, log[-3000:]
    assert f"Taking over the stale lock {out / 'distill.lock'} of PID {holder.pid}" in log
    assert "that process is gone" in log
    assert read_lora(out / "pytorch_lora_weights.safetensors").info.training_steps == step + 1
    assert not (out / "distill.lock").exists()


def test_lock_in_process(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(OutputDirInUseError, match="PID"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released: free again
        pass


def test_fresh_start_in_a_used_folder_is_refused(tiny_folder, embeddings_folder, tmp_path, caplog):
    emb = embeddings_folder("wan")
    train(make_distiller("wan", emb, tmp_path, checkpointing_steps=1, max_train_steps=2))
    args = tiny_cli_args(tiny_folder("wan"), emb, tmp_path, resume="", max_train_steps=3)
    with caplog.at_level(logging.ERROR, logger="training.distill"):
        assert main(args) == 1
    message = caplog.records[-1].getMessage()
    assert "resume='' starts a new run, but output_dir" in message
    assert "checkpoints checkpoint-1, checkpoint-2 (newest step 2)" in message
    assert "resume=latest" in message and "another output_dir" in message
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-2"]  # untouched
