#!/usr/bin/env bash
# The main job: a short multi-turn RL run on BabyAI with the embedded CPU default model.
# Extra arguments go to `turnrl train` (e.g. --steps 10 --out runs/mine).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$root/scripts/setup.sh"
cd "$root"
exec turnrl train --env babyai "$@"
