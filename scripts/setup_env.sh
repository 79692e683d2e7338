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
# The pack itself, editable, so `import blade_ops` works from any folder with this Python. Its build needs only
# setuptools >= 70.1 (it builds wheels without the `wheel` package; pyproject.toml [build-system]): without build
# isolation pip uses the venv's own and fetches nothing for the build.
if ! python -c "import setuptools as s, sys; sys.exit(tuple(map(int, s.__version__.split('.')[:2])) < (70, 1))" \
    2>/dev/null; then
    pip install -q "setuptools>=70.1"
fi
pip install -q --no-deps --no-build-isolation -e "$root"
if [ "${BLADE_TEST_DEPS:-0}" = 1 ]; then
    pip install -q -r "$root/requirements-test.txt"
fi
