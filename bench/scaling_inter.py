"""ScalingInter-RL's claim at equal steps: a fixed small turn cap, a fixed large cap, ScalingInter's staged caps
and the adaptive schedule, several seeds each, on a task where the horizon matters.

All runs start from one base (the embedded model after its format warm-up on the task's family, built once with
seed 0, or ``--base-model``), train GRPO with the family's recipe (free text; ``--set`` changes it) for the same
number of steps, and are evaluated on the same held-out tasks at the large cap (greedy) every ``--eval-every``
steps. A seed changes the RL run (task order, sampling), not the base. The paper's shape: the large cap unstable
or slower early, the small cap capped late, ScalingInter ahead.

    python bench/scaling_inter.py --json bench/results/scaling_inter.json --png bench/results/scaling_inter.png
    python bench/scaling_inter.py --quick          # 2 steps, 1 seed, 10 held-out tasks: a smoke test
    python bench/scaling_inter.py --schedules fixed_4,fixed_12 --base-model B --json a.json   # a subset, and
    python bench/scaling_inter.py --report a.json b.json --png P --json J   # subsets run side by side, merged

Prints a table (final held-out success per schedule: mean, standard deviation, min-max over seeds; wall seconds)
and writes JSON and a figure of the mean curves with their spread.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import msgspec

from turnrl.bench.report import merge_parts, write_json
from turnrl.config.curriculum import CurriculumConfig
from turnrl.config.toml_file import load
from turnrl.config.train import ModelConfig
from turnrl.engine.training.loop import Trainer
from turnrl.recipes import demo_config


def schedules(small: int, large: int, steps: int) -> dict[str, CurriculumConfig]:
    middle = (small + large) // 2
    caps = (small, middle, large)
    return {
        f"fixed_{small}": CurriculumConfig(kind="fixed", caps=(small,)),
        f"fixed_{large}": CurriculumConfig(kind="fixed", caps=(large,)),
        f"scaling_inter_{small}_{middle}_{large}": CurriculumConfig(
            kind="scaling_inter", caps=caps, stage_steps=max(1, steps // 3)
        ),
        f"adaptive_{small}_{middle}_{large}": CurriculumConfig(kind="adaptive", caps=caps),
    }


def spread(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, res in results["schedules"].items():
        runs = list(res["seeds"].values())
        steps = [e["step"] for e in runs[0]["evals"]]
        per_step = [[run["evals"][i]["success_rate"] for run in runs] for i in range(len(steps))]
        mean = [statistics.fmean(v) for v in per_step]
        (line,) = ax.plot(steps, mean, "o-", label=f"{name} ({res['final']['mean']:.2f} ± {res['final']['std']:.2f})")
        low, high = [min(v) for v in per_step], [max(v) for v in per_step]
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"held-out success at cap {results['large_cap']} (greedy)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{results['task']}: turn-cap schedules, mean and min-max over {len(results['seeds'])} seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def merge(paths: list[Path]) -> dict:
    """One result from several ``--json`` files of the same task, steps and cap (e.g. schedules run side by side)."""
    merged = merge_parts(paths, ("task", "steps", "large_cap", "small_cap", "heldout_tasks"), "schedules")
    merged["seeds"] = sorted({int(s) for res in merged["schedules"].values() for s in res["seeds"]})
    return merged


def show(results: dict, png: Path, json_path: str | None) -> None:
    print()
    print(
        f"{results['task']}: {results['steps']} steps, {len(results['seeds'])} seed(s), held-out "
        f"{results['heldout_tasks']} tasks at cap {results['large_cap']}"
    )
    print(f"{'schedule':<28}{'final mean':>11}{'std':>7}{'min-max':>13}{'RL s':>8}")
    for name, res in results["schedules"].items():
        f = res["final"]
        print(
            f"{name:<28}{f['mean']:>11.3f}{f['std']:>7.3f}{f['min']:>7.2f}-{f['max']:.2f}{res['rl_seconds']['mean']:>8.0f}"
        )
    plot(results, png)
    print(f"plot: {png}")
    if json_path:
        print(f"json: {write_json(results, json_path)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="babyai")
    parser.add_argument("--level", default="Open")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a config override (repeatable)")
    parser.add_argument("--steps", type=int, default=45)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--small-cap", type=int, default=4)
    parser.add_argument("--large-cap", type=int, default=12)
    parser.add_argument("--schedules", default=None, help="comma-separated subset of the schedule names")
    parser.add_argument("--eval-tasks", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=15)
    parser.add_argument("--out", default="runs/bench-scaling-inter")
    parser.add_argument("--json", default=None)
    parser.add_argument("--png", default=None)
    parser.add_argument("--base-model", help="start every run from this base model directory, not a new warm-up")
    parser.add_argument("--report", nargs="+", type=Path, help="merge these --json results, print and plot them")
    parser.add_argument("--quick", action="store_true", help="2 steps, seed 0, 10 held-out tasks, a tiny warm-up")
    args = parser.parse_args()
    if args.report:
        show(merge(args.report), Path(args.png or Path(args.out) / "scaling_inter.png"), args.json)
        return
    if args.small_cap >= args.large_cap:
        parser.error("--small-cap must be below --large-cap")
    steps, seeds = (2, [0]) if args.quick else (args.steps, [int(s) for s in args.seeds.split(",")])
    out = Path(args.out)
    level = args.level if args.env == "babyai" else None
    overrides = [
        *args.overrides,
        f"rollout.episode.turn_cap={args.large_cap}",
        f"eval.turn_cap={args.large_cap}",
        f"eval.tasks={10 if args.quick else args.eval_tasks}",
        f"eval.every={0 if args.quick else args.eval_every}",
    ]
    if args.quick:
        overrides.append("model.default.warmup.episodes=32")
    base = load(None, overrides, base=demo_config(args.env, steps=0, out=str(out / "base"), level=level))
    base_model = Path(args.base_model) if args.base_model else out / "base" / "base_model"
    if not args.base_model:
        Trainer(base).run()  # the format warm-up, once: every run below starts from this model
    elif not (base_model / "config.json").is_file():
        parser.error(f"--base-model {base_model} is not a model directory (no config.json)")
    chosen = schedules(args.small_cap, args.large_cap, steps)
    if args.schedules:
        unknown = set(args.schedules.split(",")) - set(chosen)
        if unknown:
            parser.error(f"unknown schedule(s) {', '.join(sorted(unknown))}; choose from: {', '.join(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in args.schedules.split(",")}

    task = f"{args.env} {level or ''}".strip()
    results: dict = {"task": task, "steps": steps, "seeds": seeds, "large_cap": args.large_cap, "schedules": {}}
    results["small_cap"], results["heldout_tasks"] = args.small_cap, base.eval.tasks
    for name, curriculum in chosen.items():
        runs = {}
        for seed in seeds:
            config = msgspec.structs.replace(
                base,
                steps=steps,
                seed=seed,
                out=str(out / f"{name}-seed{seed}"),
                model=ModelConfig(path=str(base_model)),
                curriculum=curriculum,
            )
            print(f"[scaling-inter] {name} seed {seed}: {steps} steps -> {config.out}", flush=True)
            summary = Trainer(config).run()
            runs[str(seed)] = {
                k: summary[k] for k in ("initial_success", "final_success", "rl_seconds", "train_turn_caps", "evals")
            }
        finals = [r["final_success"] for r in runs.values()]
        results["schedules"][name] = {
            "final": spread(finals),
            "rl_seconds": spread([r["rl_seconds"] for r in runs.values()]),
            "seeds": runs,
        }

    show(results, Path(args.png) if args.png else out / "scaling_inter.png", args.json)


if __name__ == "__main__":
    main()
