#!/usr/bin/env bash
# GPU smoke test of SGLangGenerator: start a real SGLang server on the embedded tiny model (no download),
# run a short BabyAI rollout through SGLangGenerator, check the sampled log-probs against transformers and a
# weight update (update_weights_from_disk bumps the version of later tokens). Needs a CUDA GPU and sglang
# (`pip install -e ".[sglang]"`). Extra arguments go to bench/generation_smoke.py.
#
#   bash bench/gpu_smoke.sh                         # port 30000, writes runs/gpu_smoke/smoke.json
#   PORT=30010 TOLERANCE=0.1 bash bench/gpu_smoke.sh --episodes 64
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
port="${PORT:-30000}"
out="${OUT_DIR:-runs/gpu_smoke}"
# bf16 on the GPU against fp32 in transformers: log-prob gaps of a few 1e-2 are rounding, not a bug
tolerance="${TOLERANCE:-0.05}"
mkdir -p "$out"

python -c "import sglang" 2>/dev/null || { echo "[gpu_smoke] sglang is not installed: pip install -e '.[sglang]'" >&2; exit 2; }
nvidia-smi -L >/dev/null || { echo "[gpu_smoke] no CUDA GPU visible" >&2; exit 2; }

python bench/generation_smoke.py --build-model "$out/policy"

# --skip-tokenizer-init: requests carry token ids and replies are read as ids (token in, token out)
python -m sglang.launch_server --model-path "$out/policy" --host 127.0.0.1 --port "$port" \
  --skip-tokenizer-init --mem-fraction-static 0.3 --disable-cuda-graph --log-level warning \
  >"$out/sglang.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

for _ in $(seq 1 300); do
  if curl -sf "http://127.0.0.1:$port/health_generate" >/dev/null 2>&1; then break; fi
  kill -0 "$server" 2>/dev/null || { echo "[gpu_smoke] SGLang exited; log:" >&2; tail -50 "$out/sglang.log" >&2; exit 1; }
  sleep 1
done
curl -sf "http://127.0.0.1:$port/health_generate" >/dev/null || { echo "[gpu_smoke] SGLang not healthy" >&2; exit 1; }

python bench/generation_smoke.py --generator sglang --model "$out/policy" --urls "http://127.0.0.1:$port" \
  --tolerance "$tolerance" --json "$out/smoke.json" "$@"
