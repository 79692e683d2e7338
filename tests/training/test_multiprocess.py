"""Contract: the distillation command runs as 2 processes (gloo on CPU, started by torchrun) end to end: prompt
encoding CLI, DDP training with gradient accumulation, per-rank RNG in the checkpoint, LoRA export; and a
checkpoint written by 2 processes resumes in 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blade_ops.lora import read_lora
from training.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], timeout: int = 150) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_two_process_gloo_run_and_resume_on_one(tiny_folder, tmp_path):
    model = tiny_folder("wan")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\na blue square bouncing up\na green ball\na white star\n")
    emb, out = tmp_path / "emb", tmp_path / "out"
    _run([sys.executable, "-m", "training.encode_prompts", "--model", str(model), "--prompts", str(prompts),
          "--output", str(emb), "--shard-size", "3", "--dtype", "fp32"])
    common = ["--model", str(model), "--prompt_embeddings", str(emb), "--output_dir", str(out), "--width", "64",
              "--height", "64", "--frames", "5", "--lora_rank", "4", "--lora_alpha", "4", "--train_batch_size", "1",
              "--gradient_accumulation_steps", "2", "--checkpointing_steps", "2", "--mixed_precision", "no",
              "--attention_backend", "torch", "--asa_overrides", '{"block_size": 16, "num_keep": 4}',
              "--validation_steps", "0"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    _run(torchrun + ["-m", "training.distill", "--max_train_steps", "2"] + common)
    ckpt = list_checkpoints(out)[-1]
    assert ckpt.name == "checkpoint-2" and (ckpt / "rng_rank1.pt").is_file()

    _run([sys.executable, "-m", "training.distill", "--max_train_steps", "3"] + common)  # one process resumes
    assert [p.name for p in list_checkpoints(out)][-1] == "checkpoint-3"
    lora = read_lora(out / "pytorch_lora_weights.safetensors")
    assert lora.info.training_steps == 3 and lora.info.rank == 4


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tiny_folder, embeddings_folder, tmp_path):
    """DDP over 2 processes x batch 1 == 1 process x batch 2: every sample draws from its own generator seeded by
    its position in the run, and DDP averages gradients like the batch mean does (ASA off: its sampled estimate
    uses each process's global RNG)."""
    from safetensors.torch import load_file

    common = ["--model", str(tiny_folder("wan")), "--prompt_embeddings", str(embeddings_folder("wan")),
              "--width", "64", "--height", "64", "--frames", "5", "--lora_rank", "4", "--lora_alpha", "4",
              "--gradient_accumulation_steps", "2", "--checkpointing_steps", "10", "--mixed_precision", "no",
              "--asa", "false", "--validation_steps", "0", "--max_train_steps", "3", "--export_dtype", "fp32",
              "--learning_rate", "1e-3", "--learning_rate_fake", "5e-3"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534"]
    _run(torchrun + ["-m", "training.distill", "--train_batch_size", "1", "--output_dir", str(tmp_path / "two")]
         + common)
    _run([sys.executable, "-m", "training.distill", "--train_batch_size", "2", "--output_dir", str(tmp_path / "one")]
         + common)
    two = load_file(tmp_path / "two" / "pytorch_lora_weights.safetensors")
    one = load_file(tmp_path / "one" / "pytorch_lora_weights.safetensors")
    assert two.keys() == one.keys()
    assert max((two[k] - one[k]).abs().max().item() for k in two) < 1e-4
    assert max(two[k].abs().max().item() for k in two if "lora_B" in k) > 1e-3  # the LoRA did train
