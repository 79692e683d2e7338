#!/usr/bin/env bash
# Data-parallel distillation against one process, on the shipped toy teacher: the same 60 steps at a global batch
# of 32, once as 2 processes x 16 (accelerate DDP over NCCL, one GPU each) and once as 1 process x 32. Prints the
# per-step losses of both runs side by side (from their TensorBoard logs) and writes them to OUT/ddp_losses.json.
#   bash benchmarks/ddp_toy.sh [OUT]        (needs 2 CUDA GPUs; OUT defaults to runs/ddp_toy)
set -euo pipefail
OUT=${1:-runs/ddp_toy}
mkdir -p "$OUT"
# NVLink multicast stays off: this check needs nothing beyond plain NCCL all-reduces.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python -c "from training.toy.domain import all_prompts; print('\n'.join(all_prompts()))" > "$OUT/prompts.txt"
python -m training.encode_prompts --model training/toy/assets/toy-wan --prompts "$OUT/prompts.txt" \
    --output "$OUT/prompt_embeddings" --dtype fp32 > "$OUT/encode.log" 2>&1
common=(-m training.distill --config training/configs/toy.yaml --prompt_embeddings "$OUT/prompt_embeddings"
        --max_train_steps 60 --checkpointing_steps 1000 --num_validation_prompts 0)
accelerate launch --config_file training/configs/accelerate_ddp.yaml --num_processes 2 "${common[@]}" \
    --train_batch_size 16 --output_dir "$OUT/ddp2" > "$OUT/ddp2.log" 2>&1
CUDA_VISIBLE_DEVICES=0 accelerate launch --num_processes 1 --mixed_precision bf16 "${common[@]}" \
    --train_batch_size 32 --output_dir "$OUT/one" > "$OUT/one.log" 2>&1
OUT="$OUT" python - <<'PY'
import glob
import json
import os
import statistics

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

out = os.environ["OUT"]
runs = {}
for run in ("ddp2", "one"):
    events = sorted(glob.glob(f"{out}/{run}/**/events.out.tfevents*", recursive=True), key=len)[0]
    acc = EventAccumulator(os.path.dirname(events))
    acc.Reload()
    runs[run] = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
json.dump(runs, open(f"{out}/ddp_losses.json", "w"))
for tag in ("loss/fake", "loss/student"):
    pairs = list(zip(runs["ddp2"][tag], runs["one"][tag]))
    print(tag, "step, 2 GPUs, 1 GPU:", [(s, round(a, 4), round(b, 4)) for (s, a), (_, b) in pairs[::10]],
          "max abs diff", max(abs(a - b) for (_, a), (_, b) in pairs))
for run in ("ddp2", "one"):
    steps = [v for _, v in runs[run]["time/step_s"]]
    print(run, "median step (s) after the first 5:", statistics.median(steps[5:] or steps))
PY
