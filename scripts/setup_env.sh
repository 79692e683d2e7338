#!/usr/bin/env bash
# Create .venv (once) with the CPU build of torch and the pack's dependencies. Sourced by the other scripts.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$root/.venv/bin/python" ]; then
    python3 -m venv "$root/.venv"
fi
# shellcheck disable=SC1091
. "$root/.venv/bin/activate"
if ! python -c "import torch" 2>/dev/null; then
    # Pinned on purpose: 2.13.0 is a local CPU build here; an unpinned torch pulls a multi-GB CUDA build.
    pip install -q torch==2.13.0
fi
pip install -q -r "$root/requirements.txt"
if [ "${BLADE_TEST_DEPS:-0}" = 1 ]; then
    pip install -q -r "$root/requirements-test.txt"
fi
