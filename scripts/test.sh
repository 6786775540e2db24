#!/usr/bin/env bash
# The test suite (CPU only; Triton kernels run in the interpreter), after the linters: ruff check, ruff format
# --check. The import rules (imports only run down the rooms) are tests/test_house.py. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$root/scripts/setup.sh"
cd "$root"
ruff check turnrl tests bench examples
ruff format --check turnrl tests bench examples
export TRITON_INTERPRET=1
exec python -m pytest -q "$@"
