"""Learning benchmark: every algorithm, and ScalingInter against fixed turn caps, on BabyAI with the embedded model.

Every run starts from the same warmed-up base model (built once, random-valid-action warm-up only) and is
evaluated on the same held-out tasks before and after training. Algorithms run under the demo's fixed turn cap;
the schedule comparison runs GRPO for the same number of steps under a fixed small cap, a fixed large cap and
ScalingInter's staged caps (small -> large), all evaluated at the large cap.

    python bench/learning.py --json bench/results/learning.json            # full (about an hour on 2 cores)
    python bench/learning.py --quick                                       # a few steps each, to smoke-test

Prints a table, writes JSON (``--json``) and a plot (``learning.png`` in the output directory).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import msgspec

from turnrl.config.curriculum import CurriculumConfig
from turnrl.config.train import EvalConfig, ModelConfig
from turnrl.engine.records.metrics import read_metrics
from turnrl.engine.training.loop import Trainer
from turnrl.recipes import constrained_decoding, demo_config

ALGORITHMS = ("grpo", "ppo", "reinforce_pp", "rloo")


def run(config, label: str) -> dict:
    print(f"[learning] {label}: {config.steps} steps -> {config.out}", flush=True)
    summary = Trainer(config).run()
    rows = read_metrics(Path(config.out) / "metrics.jsonl") if config.steps else []
    return {
        "initial_success": summary["initial_success"],
        "final_success": summary["final_success"],
        "initial_success_sampled": summary["initial_success_sampled"],
        "final_success_sampled": summary["final_success_sampled"],
        "wall_seconds": summary["wall_seconds"],
        "rl_seconds": summary["rl_seconds"],
        "train_turn_caps": summary["train_turn_caps"],
        "evals": summary["evals"],
        "train_success": [r["train/success_rate"] for r in rows],
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=110, sharey=True)
    for ax, (title, runs) in zip(
        axes, (("algorithms", results["algorithms"]), ("turn-cap schedules (GRPO)", results["schedules"])), strict=True
    ):
        for name, res in runs.items():
            train = res["train_success"]
            smooth = [sum(train[max(0, i - 9) : i + 1]) / len(train[max(0, i - 9) : i + 1]) for i in range(len(train))]
            (line,) = ax.plot(range(1, len(train) + 1), smooth, label=f"{name} (train, 10-step mean)")
            ax.plot(
                [e["step"] for e in res["evals"]],
                [e["success_rate"] for e in res["evals"]],
                "o--",
                color=line.get_color(),
                alpha=0.8,
            )
        ax.set_title(f"{title}: train success (lines), held-out (dots)")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("success rate")
    axes[0].set_ylim(-0.02, 1.02)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--algos", default=",".join(ALGORITHMS))
    parser.add_argument("--small-cap", type=int, default=2)
    parser.add_argument("--large-cap", type=int, default=6)
    parser.add_argument("--out", default="runs/bench-learning")
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true", help="4 steps and 20 held-out tasks per run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    steps = 4 if args.quick else args.steps
    out = Path(args.out)
    base = demo_config("babyai", steps=0, seed=args.seed, out=str(out / "base"))
    # the figures in bench/RESULTS.md were measured under valid-action constraints from the 1600-episode warm-up
    base = msgspec.structs.replace(constrained_decoding(base), model=ModelConfig())
    eval_cfg = EvalConfig(
        tasks=20 if args.quick else base.eval.tasks,
        turn_cap=args.large_cap,
        temperature=base.eval.temperature,
        every=0 if args.quick else 40,
    )
    base = msgspec.structs.replace(base, eval=eval_cfg)
    start = time.perf_counter()
    Trainer(base).run()  # warm-up once; every run below starts from this base model
    base_model = str(out / "base" / "base_model")

    def config(name: str, algo: str, curriculum: CurriculumConfig):
        episode = msgspec.structs.replace(base.rollout.episode, turn_cap=args.large_cap)
        return msgspec.structs.replace(
            base,
            steps=steps,
            out=str(out / name),
            model=ModelConfig(path=base_model),
            algo=msgspec.structs.replace(base.algo, name=algo),
            curriculum=curriculum,
            rollout=msgspec.structs.replace(base.rollout, episode=episode),
        )

    results: dict = {
        "env": "babyai",
        "level": base.env.options["level"],
        "steps": steps,
        "heldout_tasks": eval_cfg.tasks,
        "eval_turn_cap": args.large_cap,
        "eval_temperature": eval_cfg.temperature,
        "decoding": "valid-action constrained",
        "algorithms": {},
        "schedules": {},
    }
    for algo in args.algos.split(","):
        results["algorithms"][algo] = run(config(algo, algo, CurriculumConfig()), algo)
    small, large = args.small_cap, args.large_cap
    middle = (small + large) // 2
    schedules = {
        f"fixed_{small}": CurriculumConfig(kind="fixed", caps=(small,)),
        f"scaling_inter_{small}_{middle}_{large}": CurriculumConfig(
            kind="scaling_inter", caps=(small, middle, large), stage_steps=max(1, steps // 3)
        ),
    }
    for name, curriculum in schedules.items():
        results["schedules"][name] = run(config(name, "grpo", curriculum), name)
    if "grpo" in results["algorithms"]:
        results["schedules"][f"fixed_{large}"] = results["algorithms"]["grpo"]
    results["total_seconds"] = time.perf_counter() - start

    print()
    print(
        f"BabyAI {results['level']}, {steps} steps, held-out {eval_cfg.tasks} tasks at cap {large} "
        f"(T={eval_cfg.temperature:g}; sampled T=1 in brackets)"
    )
    print(f"{'run':<24}{'initial':>16}{'final':>16}{'gain':>8}{'wall s':>9}")
    for group in ("algorithms", "schedules"):
        for name, r in results[group].items():
            gain = r["final_success"] - r["initial_success"]
            print(
                f"{name:<24}{r['initial_success']:>7.3f} ({r['initial_success_sampled']:.3f})"
                f"{r['final_success']:>7.3f} ({r['final_success_sampled']:.3f})"
                f"{gain:>+8.3f}{r['wall_seconds']:>9.0f}"
            )
    out.mkdir(parents=True, exist_ok=True)
    plot(results, out / "learning.png")
    print(f"plot: {out / 'learning.png'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, sort_keys=True))
        print(f"json: {args.json}")


if __name__ == "__main__":
    main()
