#!/usr/bin/env bash
# Idempotent environment setup: a virtual environment in .venv with torch and turnrl installed.
# Sourced by scripts/train.sh and scripts/test.sh; safe to run any number of times.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# System packages, installed once when their command is missing (needs root and apt; otherwise a warning):
# Java 17 for SciWorld's simulator JAR, Debian's Chromium for the web env (Playwright drives it; no download).
apt_updated=0
need_command() {  # need_command COMMAND PACKAGE WHAT
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing $2 (for $3)" >&2
    if [ "$apt_updated" = 0 ]; then apt-get update -qq >/dev/null; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    echo "[setup] warning: no $1 found; $3 needs it (apt-get install $2)" >&2
  fi
}
need_command java openjdk-17-jre-headless "the SciWorld env"
need_command chromium chromium "the web env and the trajectory viewer test"

python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

stamp=.venv/.turnrl-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  echo "[setup] installing into .venv (first run takes a few minutes)" >&2
  python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  # torch 2.13.0: on a machine without a GPU this resolves to the local CPU build where one is provided;
  # with a GPU, PyPI's CUDA build. TORCH_SPEC overrides (e.g. TORCH_SPEC="torch==2.13.0 --index-url ...").
  # shellcheck disable=SC2086
  python -m pip install --quiet ${TORCH_SPEC:-torch==2.13.0} 2>&1 | grep -v "is ignored" >&2 || true
  python -c "import torch" || { echo "[setup] torch failed to install" >&2; exit 1; }
  python -m pip install --quiet -e ".[test]" 2>&1 | grep -v "is ignored" >&2 || true
  python -c "import turnrl, pytest" || { echo "[setup] turnrl failed to install" >&2; exit 1; }
  # SGLang's own request classes, for the contract tests (the wheel alone: its CUDA dependencies are not needed
  # to read them; tests/generation/sglang_classes.py loads them). Skipped where it cannot be had.
  if ! python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('sglang') is None)"; then
    python -m pip install --quiet --no-deps "sglang==0.5.23" 2>&1 | grep -v "is ignored" >&2 || true
  fi
  touch "$stamp"
fi
