#!/usr/bin/env bash
# Set up .venv and make a video headless on this machine (no weights needed for --demo).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$root/scripts/setup_env.sh"
cd "$root"
python -m blade_ops.generate --demo --output outputs/demo.mp4 --overwrite "$@"
