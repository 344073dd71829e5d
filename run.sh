#!/usr/bin/env bash
# The one entry point. It creates .venv and installs requirements.txt and
# requirements-export.txt (ONNX, bioimage.io) on first use, then this checkout itself
# (pip install -e ., which adds the `unet` command: .venv/bin/unet).
#   ./run.sh [OPTIONS]      the main job: fetch, train (default sized to the machine),
#                           predict, evaluate; OPTIONS as for `python main.py all --help`
#   ./run.sh test [ARGS]    the test suite (pytest ARGS), after installing requirements-dev.txt
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
  done
fi
[ -n "$python" ] || { echo "error: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 2; }

if [ ! -x .venv/bin/python ] || [ ! -f .venv/.installed ] || [ requirements.txt -nt .venv/.installed ] \
   || [ requirements-export.txt -nt .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "Setting up .venv with $("$python" --version) (first run only) ..."
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-export.txt
  # the pinned packages are in place: install the checkout itself, offline, with the venv's setuptools
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e . >.venv/install-checkout.log 2>&1 \
    || { cat .venv/install-checkout.log >&2; exit 1; }
  touch .venv/.installed
fi

if [ "${1:-}" = "test" ]; then
  shift
  if [ ! -f .venv/.installed-dev ] || [ requirements-dev.txt -nt .venv/.installed-dev ]; then
    echo "Installing the test extras (requirements-dev.txt) ..."
    .venv/bin/python -m pip install --quiet -r requirements-dev.txt
    touch .venv/.installed-dev
  fi
  exec .venv/bin/python -m pytest -n auto "$@"
fi
exec .venv/bin/python main.py all "$@"
