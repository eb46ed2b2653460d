#!/usr/bin/env bash
# The whole test suite (sets up the environment first). Extra arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup_env.sh"
bash "$repo/scripts/setup_browser.sh"
venv="${IMMUNODIFF_VENV:-$repo/.venv}"
# Use the checked-in copy of the sample CTs when it sits beside the repository (as in CI),
# instead of downloading them; a user's own setting wins.
if [ -z "${IMMUNODIFF_SAMPLE_DATA:-}" ] && [ -d "$repo/../shared/data/chest_ct" ]; then
  export IMMUNODIFF_SAMPLE_DATA="$repo/../shared/data/chest_ct:$repo/../shared/data/lidc"
fi
cd "$repo"
"$venv/bin/ruff" check .
# one worker per core, each test file in one worker (its fixtures built once); the slowest
# tests are listed at the end: the suite has to stay under 25 minutes on 2 cores
exec "$venv/bin/python" -m pytest Testing -n auto --dist loadfile --durations=15 "$@"
