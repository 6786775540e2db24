#!/usr/bin/env bash
# The test suite (CPU only; Triton kernels run in the interpreter). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$root/scripts/setup.sh"
cd "$root"
export TRITON_INTERPRET=1
exec python -m pytest -q "$@"
