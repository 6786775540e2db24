"""Asynchronous training against synchronous, end to end: the same run at several staleness bounds.

BabyAI GoToLocal with the embedded model, every run from one fixed base model directory and seed, 8 prompts x 8
episodes per step, the default CPU recipe otherwise. Per run: wall seconds per step, steps per hour, the
generator's and the learner's busy share of the RL time, the per-step staleness (mean and max, and how many steps
reached each max), and held-out success after the same number of steps (greedy, 200 tasks). Runs are sequential
on the same machine; the speed-ups are ratios against the eta = 0 run of the same invocation.

    python bench/async_training.py --base-model runs/babyai-X/base_model --json bench/results/async_training.json
    python bench/async_training.py --base-model DIR --steps 4 --runs 0,1 --heldout 20     # a quick look

The latency-model variant (``--latency-model agentic|reasoning``, see ``node_model.py``) runs the same loop with a
modelled GPU node in place of the CPU learner and generator: the synchronous run colocated on all GPUs, the
asynchronous ones with ``--generation-gpus`` of them generating and the rest training. No base model, no held-out
figure (a modelled policy does not learn); the node's parameters are printed beside the figures.

    python bench/async_training.py --latency-model reasoning --json bench/results/async_training_node.json
    python bench/async_training.py --latency-model reasoning --learner-tokens-per-s 10000   # a faster learner
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import msgspec
import torch
from node_model import PRESETS, NodeCosts, run_modelled

from turnrl.bench.report import write_json
from turnrl.config.generation import GeneratorConfig
from turnrl.config.train import EvalConfig, ModelConfig
from turnrl.engine.records.metrics import read_metrics
from turnrl.engine.training.loop import Trainer
from turnrl.recipes import constrained_decoding, demo_config

# (name, staleness, in-flight policy)
RUNS = {
    "0": ("eta0", 0, "continue"),
    "1": ("eta1", 1, "continue"),
    "2": ("eta2", 2, "continue"),
    "4": ("eta4", 4, "continue"),
    "1a": ("eta1_abort", 1, "abort"),
    "2a": ("eta2_abort", 2, "abort"),
}
# run keys with a suffix "d" or "t" add the off-policy correction "decoupled" or "truncated_is" (e.g. "1d")
CORRECTIONS = {"d": "decoupled", "t": "truncated_is"}


def one_run(name: str, eta: int, in_flight: str, off_policy: str, args, out: Path) -> dict:
    # measured under valid-action constraints (the decoding the main job's base was built for)
    base = constrained_decoding(demo_config("babyai", steps=args.steps, out=str(out / name), seed=args.seed))
    learner = msgspec.structs.replace(base.algo.learner, off_policy=off_policy)
    config = msgspec.structs.replace(
        base,
        algo=msgspec.structs.replace(base.algo, learner=learner),
        model=ModelConfig(path=str(Path(args.base_model).resolve())),
        rollout=msgspec.structs.replace(
            base.rollout,
            staleness=eta,
            generator=GeneratorConfig(kind=args.generator, in_flight=in_flight, torch_threads=args.service_threads),
        ),
        eval=EvalConfig(tasks=args.heldout, turn_cap=base.eval.turn_cap, temperature=0.0, every=0),
    )
    start, cpu_start = time.perf_counter(), cpu_seconds()
    summary = Trainer(config).run()
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    rows = read_metrics(out / name / "metrics.jsonl")
    rl = summary["rl_seconds"]
    busy = [r.get("throughput/generator_busy_fraction") for r in rows]
    busy = [b * r["time/rollout_s"] for b, r in zip(busy, rows, strict=True) if b is not None]
    return {
        "eta": eta,
        "in_flight": in_flight,
        "off_policy": off_policy,
        "steps": args.steps,
        "rl_seconds": rl,
        "wall_seconds": wall,
        "cores_busy": cpu / wall,  # CPU seconds per wall second, this process and its finished children
        "seconds_per_step": rl / args.steps,
        "steps_per_hour": 3600 * args.steps / rl,
        "generator_busy_share": sum(busy) / rl if busy else None,
        "learner_busy_share": sum(r["time/update_s"] for r in rows) / rl,
        "update_s_median": statistics.median(r["time/update_s"] for r in rows),
        "rollout_s_median": statistics.median(r["time/rollout_s"] for r in rows),
        **staleness_figures(rows),
        "heldout_initial": summary["initial_success"],
        "heldout_final": summary["final_success"],
    }


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its children that have exited (a service process)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def staleness_figures(rows: list[dict]) -> dict:
    return {
        "staleness_mean": statistics.fmean(r["staleness/mean"] for r in rows),
        "staleness_max_per_step": dict(sorted(Counter(int(r["staleness/max"]) for r in rows).items())),
        "stale_dropped": rows[-1]["buffer/stale_dropped"],
    }


def modelled_runs(args, keys: list[str], costs: NodeCosts) -> dict:
    """The latency-model variant: every run key at each generation/training split, eta 0 colocated."""
    workload = PRESETS[args.latency_model]
    splits = [int(g) for g in args.generation_gpus.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="turnrl-node-") as tmp:
        plan = [("eta0_colocated", 0, None)]
        plan += [(f"eta{RUNS[k][1]}_gen{g}", RUNS[k][1], g) for k in keys if k != "0" for g in splits]
        for name, eta, gpus in plan:
            base = demo_config("babyai", steps=args.steps, out=str(Path(tmp) / name), seed=args.seed)
            rollout = msgspec.structs.replace(
                base.rollout, staleness=eta, prompts_per_step=args.prompts, group_size=args.group, concurrency=4096
            )
            config = msgspec.structs.replace(
                base,
                rollout=rollout,
                curriculum=msgspec.structs.replace(base.curriculum, kind="fixed", caps=()),
                eval=msgspec.structs.replace(base.eval, every=0),
                checkpoint_every=0,
            )
            r = run_modelled(config, workload, costs, gpus)
            rows = read_metrics(Path(tmp) / name / "metrics.jsonl")
            r |= {"eta": eta, "seconds_per_step": r["rl_seconds"] / args.steps}
            r |= {"generator_busy_share": r["generator_busy"] / r["rl_seconds"]}
            r |= {"learner_busy_share": r["learner_busy"] / r["rl_seconds"]} | staleness_figures(rows)
            results[name] = r
            print(f"[{name}] {r['seconds_per_step']:.1f} modelled s/step", flush=True)
    sync = results["eta0_colocated"]
    for r in results.values():
        r["speedup"] = sync["seconds_per_step"] / r["seconds_per_step"]
        # no overlap beats the learner: its modelled update (and the weight transfer) per step bounds the split
        learner_step = r["learner_busy"] / args.steps
        transfer = costs.colocated_switch_s if r["layout"] == "colocated" else costs.broadcast_s
        r["learner_bound"] = sync["seconds_per_step"] / (learner_step + transfer)
    best = max((n for n in results if n != "eta0_colocated"), key=lambda n: results[n]["speedup"])
    eta1 = [n for n in results if n.startswith("eta1_")]
    print(
        f"\nasync training on a modelled node: workload {args.latency_model!r}, {args.steps} steps x "
        f"{args.prompts * args.group} episodes"
    )
    print("node:", msgspec.json.encode(costs).decode())
    print("workload:", msgspec.json.encode(workload).decode())
    print(
        f"{'run':<20}{'layout':>24}{'s/step':>9}{'speedup':>9}{'gen busy':>10}{'learn busy':>11}{'bound':>8}"
        f"{'stale max':>30}"
    )
    for name, r in results.items():
        hist = " ".join(f"{k}:{v}" for k, v in r["staleness_max_per_step"].items())
        print(
            f"{name:<20}{r['layout']:>24}{r['seconds_per_step']:>9.1f}{r['speedup']:>8.2f}x"
            f"{r['generator_busy_share']:>10.2f}{r['learner_busy_share']:>11.2f}{r['learner_bound']:>7.2f}x{hist:>30}"
        )
    return {
        "latency_model": args.latency_model,
        "speedup_eta1": max((results[n]["speedup"] for n in eta1), default=None),
        "speedup_best": results[best]["speedup"],
        "best": best,
        "node": msgspec.to_builtins(costs),
        "workload": msgspec.to_builtins(workload),
        "steps": args.steps,
        "episodes_per_step": args.prompts * args.group,
        "runs": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-model", help="a base model directory (e.g. a run's base_model/)")
    parser.add_argument("--latency-model", choices=sorted(PRESETS), help="the modelled GPU node's workload")
    parser.add_argument("--generation-gpus", default="4,6", help="latency model: GPUs (of 8) generating, a list")
    parser.add_argument("--prompts", type=int, default=64, help="latency model: prompts per step")
    parser.add_argument("--group", type=int, default=8, help="latency model: episodes per prompt")
    parser.add_argument(
        "--learner-tokens-per-s",
        type=float,
        default=NodeCosts().train_tokens_per_s_per_gpu,
        help="latency model: trained tokens per second per training GPU",
    )
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument(
        "--runs",
        default="0,1,2,4,1a",
        help=f"comma-separated, from {', '.join(RUNS)}; a suffix "
        "d or t adds the decoupled or truncated-IS correction (1d, 2t)",
    )
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--generator", default="local", choices=("local", "service"))
    parser.add_argument("--service-threads", type=int, help="--generator service: the service process's torch threads")
    parser.add_argument("--learner-threads", type=int, help="torch threads of this process (the learner's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.service_threads is not None and args.generator != "service":
        parser.error("--service-threads needs --generator service")
    if args.learner_threads is not None:
        torch.set_num_threads(args.learner_threads)
    keys = args.runs.split(",")
    unknown = [k for k in keys if k.rstrip("dt") not in RUNS or len(k) - len(k.rstrip("dt")) > 1]
    if unknown or "0" not in keys:
        parser.error(f"--runs must include 0 (the synchronous run) and only {', '.join(RUNS)}; got {args.runs}")
    if args.latency_model:
        try:
            costs = NodeCosts(train_tokens_per_s_per_gpu=args.learner_tokens_per_s)
        except ValueError as e:
            parser.error(f"--learner-tokens-per-s: {e}")
        if any(not k.isdigit() for k in keys):
            parser.error("the latency model runs the in-flight 'continue' mode without corrections: --runs 0,1,2,4")
        figures = modelled_runs(args, keys, costs)
        if args.json:
            write_json(figures, args.json)
        return
    if not args.base_model:
        parser.error("--base-model is required (or --latency-model)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="turnrl-async-") as tmp:
        for key in keys:
            name, eta, in_flight = RUNS[key.rstrip("dt")]
            off_policy = CORRECTIONS.get(key[-1], "none")
            name += f"_{off_policy}" if off_policy != "none" else ""
            results[name] = one_run(name, eta, in_flight, off_policy, args, Path(tmp))
            r = results[name]
            print(f"[{name}] {r['seconds_per_step']:.2f} s/step, held-out {r['heldout_final']:.3f}", flush=True)
    sync = results["eta0"]
    for r in results.values():
        r["speedup"] = sync["seconds_per_step"] / r["seconds_per_step"]
        r["heldout_gap"] = r["heldout_final"] - sync["heldout_final"]
    best = max((n for n in results if n != "eta0"), key=lambda n: results[n]["speedup"], default="eta0")
    figures = {
        "speedup_eta1": results["eta1"]["speedup"] if "eta1" in results else None,
        "speedup_best": results[best]["speedup"],
        "best": best,
        "heldout_gap_best": results[best]["heldout_gap"],
        # the most any overlap can give here: all cores busy, against what the synchronous run kept busy
        "cpu_ceiling": (os.cpu_count() or 1) / sync["cores_busy"],
        "generator": args.generator,
        "service_threads": args.service_threads,
        "learner_threads": torch.get_num_threads(),
        "steps": args.steps,
        "heldout_tasks": args.heldout,
        "runs": results,
    }
    print(
        f"\nasync training: BabyAI GoToLocal, {args.steps} steps x 64 episodes, generator {args.generator} "
        f"(threads: service {args.service_threads or 'default'}, learner {torch.get_num_threads()}), "
        f"held-out {args.heldout} tasks (greedy)"
    )
    print(
        f"{'run':<20}{'s/step':>8}{'steps/h':>9}{'speedup':>9}{'gen busy':>10}{'learn busy':>11}"
        f"{'cores':>7}{'update s':>10}{'rollout s':>10}{'stale max':>24}{'held-out':>10}{'gap':>8}"
    )
    for name, r in results.items():
        gen = f"{r['generator_busy_share']:.2f}" if r["generator_busy_share"] is not None else "-"
        hist = " ".join(f"{k}:{v}" for k, v in r["staleness_max_per_step"].items())
        print(
            f"{name:<20}{r['seconds_per_step']:>8.2f}{r['steps_per_hour']:>9.0f}{r['speedup']:>8.2f}x{gen:>10}"
            f"{r['learner_busy_share']:>11.2f}{r['cores_busy']:>7.2f}"
            f"{r['update_s_median']:>10.2f}{r['rollout_s_median']:>10.2f}"
            f"{hist:>24}{r['heldout_final']:>10.3f}{r['heldout_gap']:>+8.3f}"
        )
    print(f"ceiling of any overlap on {os.cpu_count()} cores (all busy vs eta 0's): {figures['cpu_ceiling']:.2f}x")
    if args.json:
        write_json(figures, args.json)


if __name__ == "__main__":
    main()
