#!/usr/bin/env bash
# The main job on the embedded default: sample chest CT -> crop around its tumour -> files + PNG.
# Usage: bash scripts/demo.sh [output-folder]   (default: ./demo_output)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup_env.sh"
exec "${IMMUNODIFF_VENV:-$repo/.venv}/bin/immunodiff" demo --output "${1:-$repo/demo_output}"
