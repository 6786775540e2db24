"""Rollout benchmark: the async engine against AgentGym-RL's lock-step baseline, on the same components.

A thin caller of the package's ``turnrl bench rollout`` (``turnrl.bench``): the published figures and the command
are one thing. Each part below is one command:

- workload (b), ``turnrl bench rollout --workload agentic``: the fixed agentic workload (see
  ``turnrl/bench/presets.py``), async and lock-step; ``--workload agentic-overhead`` three times (the engine's CPU
  per env step with zero-latency envs and a zero-cost generator, median of 3); ``--workload agentic-scale``
  (4096 episodes in flight at once, peak RSS; 1024 with --quick);
- workload (a), ``turnrl bench rollout --env babyai --env-option level=GoToLocal`` and ``--env textcraft``: real
  envs with the embedded tiny model (untrained) through ``LocalGenerator``, async with in-process envs, async
  with envs in 2 EnvWorker processes (``--env-workers 2``), and lock-step.

    python bench/rollout.py --json bench/results/rollout.json            # full (about 4 minutes)
    python bench/rollout.py --quick                                      # under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path

from turnrl.bench.presets import babyai_chat, preset_plan
from turnrl.bench.report import table
from turnrl.bench.run import run_mode, run_plan
from turnrl.bench.setup import build_plan
from turnrl.config.bench import RolloutBenchConfig
from turnrl.envs.registry import env_names

REAL_ENVS = {"babyai": {"level": "GoToLocal"}, "textcraft": {}}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def workload_b(args) -> dict:
    chat = babyai_chat()
    plan = preset_plan("agentic", quick=args.quick, time_scale=args.time_scale, chat=chat)
    print(f"[rollout] (b) {plan.describe}", flush=True)
    out = asyncio.run(run_plan(plan))
    print(table(out), flush=True)
    overhead = preset_plan("agentic-overhead", quick=args.quick, time_scale=args.time_scale, chat=chat)
    out["overhead"] = [asyncio.run(run_mode(overhead, "async"))["overhead_us_per_step"] for _ in range(3)]
    scale = preset_plan("agentic-scale", quick=args.quick, time_scale=args.time_scale, chat=chat)
    out["scale"] = asyncio.run(run_mode(scale, "async"))
    out["scale"]["time_scale"] = scale.describe["time_scale"]
    out["scale"]["peak_rss_mb"] = peak_rss_mb()
    print(f"[rollout] (b) {scale.describe['episodes']} in flight done in {out['scale']['wall_s']:.1f} s", flush=True)
    return out


def workload_a(args) -> dict:
    episodes, concurrency, turn_cap = (8, 8, 4) if args.quick else (48, 16, 6)
    out = {}
    for family in [f for f in REAL_ENVS if f in env_names()]:
        common = dict(env=family, env_options=REAL_ENVS[family], concurrency=concurrency, max_turns=turn_cap)
        warm = build_plan(RolloutBenchConfig(**common, episodes=4, max_new_tokens=24, modes=("lockstep",)))
        asyncio.run(run_plan(warm))  # warm-up, not reported
        row = asyncio.run(run_plan(build_plan(RolloutBenchConfig(**common, episodes=episodes, max_new_tokens=24))))
        workers = build_plan(
            RolloutBenchConfig(**common, episodes=episodes, max_new_tokens=24, env_workers=2, modes=("async",))
        )
        row["modes"]["async+workers"] = asyncio.run(run_mode(workers, "async"))
        workers.cleanup()
        print(table(row), flush=True)
        out[family] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="shrinks every latency of workload (b) (default 0.25, --quick 0.05)",
    )
    parser.add_argument("--skip-a", action="store_true", help="only workload (b)")
    args = parser.parse_args()
    if args.time_scale is not None and not args.time_scale > 0:
        parser.error("--time-scale must be > 0")
    start = time.perf_counter()
    results = {"b": workload_b(args)}
    b = results["b"]
    fast, slow = b["modes"]["async"], b["modes"]["lockstep"]
    results["summary"] = {
        "workload": "b",
        "time_scale": b["config"]["time_scale"],
        "async_speedup": slow["wall_s"] / fast["wall_s"],
        "generator_busy_fraction": fast["generator_busy_share"],
        "mean_running_batch": fast["running_batch"],
        "efficiency_vs_ideal": b["config"]["ideal_s"] / fast["wall_s"],
        "overhead_us_per_step": sorted(b["overhead"])[len(b["overhead"]) // 2],
        "env_steps_per_s": fast["env_steps_per_s"],
        "tokens_per_s": fast["tokens_per_s"],
        "max_concurrent_episodes": b["scale"]["max_in_flight"],
        "peak_rss_mb": b["scale"]["peak_rss_mb"],
    }
    if not args.skip_a:
        results["a"] = workload_a(args)
    results["wall_s"] = time.perf_counter() - start
    print(json.dumps(results["summary"], indent=1))
    print(f"[rollout] total {results['wall_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**results["summary"], "details": results}, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
