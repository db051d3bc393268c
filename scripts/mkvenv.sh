#!/usr/bin/env bash
# mkvenv.sh PYTHON DIR: create the project's virtual environment.
# Debian's python3 ships venv in a separate package (python3-venv): install it when missing.
set -euo pipefail
PYTHON=${1:-python3}; DIR=${2:-.venv}
if ! "$PYTHON" -m venv "$DIR" 2>/dev/null; then
  rm -rf "$DIR"
  echo "mkvenv: '$PYTHON -m venv' failed; installing python3-venv" >&2
  "$(dirname "$0")/ensure-apt.sh" python3-venv python3-dev
  "$PYTHON" -m venv "$DIR"
fi
