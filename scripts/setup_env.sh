#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv with pinned dependencies.
# Safe to run repeatedly: when requirements.txt, constraints.txt and pyproject.toml are
# unchanged since the last successful install, it returns at once.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${IMMUNODIFF_VENV:-$repo/.venv}"
stamp="$venv/.immunodiff-install-stamp"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

want=$(cat "$repo/requirements.txt" "$repo/constraints.txt" "$repo/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi

echo "Setting up the Python environment in $venv (first run takes about two minutes)..." >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# The CPU torch wheel is pinned in constraints.txt for every install (any other torch
# request would pull a multi-GB CUDA build).
"${pip[@]}" install -c "$repo/constraints.txt" -r "$repo/requirements.txt" 2> >(grep -v "is ignored: it is neither" >&2)
# TotalSegmentator pulls a CUDA torchvision that cannot import against CPU torch; nothing
# here imports it, and leaving it installed breaks packages that probe for it.
"${pip[@]}" uninstall -y torchvision >/dev/null 2>&1 || true
"${pip[@]}" install --no-deps --no-build-isolation -e "$repo" 2> >(grep -v "is ignored: it is neither" >&2)
echo "$want" > "$stamp"
