#!/usr/bin/env bash
# Set up .venv and make a video headless on this machine: the shipped toy Wan-architecture teacher with its
# distilled BLADE LoRA, 8 sparse steps without CFG (ASA settings from the LoRA's metadata), written to
# outputs/demo.mp4. DEMO_PROMPT sets the prompt ("a {colour} {circle|square|triangle} moving {left|right|up|down}");
# extra arguments go to `python -m blade_ops.generate` (e.g. --seed 3 --output outputs/other.mp4).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$root/scripts/setup_env.sh"
cd "$root"
toy=training/toy/assets
python -m blade_ops.generate --model "$toy/toy-wan" --lora "$toy/toy_blade_lora.safetensors" --preset blade \
    --prompt "${DEMO_PROMPT:-a red circle moving left}" --width 128 --height 128 --frames 17 --seed 0 \
    --output outputs/demo.mp4 --overwrite "$@"
