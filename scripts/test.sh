#!/usr/bin/env bash
# Set up .venv, run the CPU test suite, then lint (ruff, settings in pyproject.toml). GPU-only tests skip without
# CUDA; ComfyUI server tests skip unless COMFYUI_PATH points at a ComfyUI checkout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BLADE_TEST_DEPS=1 . "$root/scripts/setup_env.sh"
cd "$root"
python -m pytest -q "$@"
ruff check .
