"""Contract: one run per output folder (the lock, in process; tests/training/test_stop_signals.py runs it with real
processes), and a fresh start (resume='') in a folder holding an earlier run is refused, saying what is there and
what to do."""

from __future__ import annotations

import logging

import pytest
from cli_runs import tiny_cli_args
from training_helpers import make_distiller

from training.checkpoint import list_checkpoints
from training.distill import main, train
from training.errors import OutputDirInUseError
from training.run_dir import RunLock


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
