"""Learning suite: several tasks, each trained in free text from its own embedded base (format warm-up only).

Every task is ``turnrl train --env FAMILY`` as a user runs it (the family's recipe, ``turnrl.recipes``), with the
task's own overrides: the embedded model is built and warmed up on the family's random valid actions, evaluated
on held-out tasks (greedy and sampled), trained, and evaluated again on the same tasks. Wall time includes the
warm-up. A task's row: held-out success before and after, the gain, the valid-reply rate and mean turns before
and after, wall seconds, and beside them the success of a player that picks uniformly among the env's listed
actions on every turn (no model; what the format warm-up imitates), on the same held-out tasks at the same cap.

    python bench/learning_suite.py --json bench/results/learning_suite.json --png bench/results/learning_suite.png
    python bench/learning_suite.py --tasks gotolocal,textcraft       # a subset
    python bench/learning_suite.py --quick                           # 2 steps and 10 held-out tasks each
    python bench/learning_suite.py --report a.json b.json --png P --json J   # subsets run side by side, merged
    python bench/learning_suite.py --horizon 8 --tasks unlocklocal   # the fewest listed actions that win each task

Prints a table, writes JSON (``--json``) and one figure of the held-out curves against wall time (``--png``).
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from turnrl.bench.report import merge_parts, write_json
from turnrl.config.toml_file import load
from turnrl.config.train import TrainConfig
from turnrl.engine.records.metrics import read_metrics
from turnrl.engine.rollout.sampler import heldout_tasks
from turnrl.engine.training.loop import Trainer
from turnrl.engine.training.warmup import random_episodes
from turnrl.envs import get_env_spec
from turnrl.recipes import demo_config


@dataclass(frozen=True)
class SuiteTask:
    name: str
    env: str
    steps: int | None = None  # None: the recipe's
    level: str | None = None
    overrides: tuple[str, ...] = field(default=())  # ``--set`` strings on top of the family's recipe


_LISTED_TARGETS_EVEN_ODDS = ("model.default.warmup.reply_targets=listed", "algo.learner.off_list_log_prob=even")


def _whole_cap(warmup_episodes: int) -> tuple[str, ...]:
    """BabyAI's published cap, 20, from a warm-up that plays whole 20-turn episodes in small batches (a quarter as
    many optimizer steps as episodes), so the base's replies keep the format on every turn it will play."""
    return (
        "rollout.episode.turn_cap=20",
        "eval.turn_cap=20",
        "eval.every=15",
        "model.default.warmup.turn_cap=20",
        f"model.default.warmup.episodes={warmup_episodes}",
        "model.default.warmup.batch_episodes=4",
        *_LISTED_TARGETS_EVEN_ODDS,
    )


# BabyAI runs its recipe as it is: free text, the 4800-episode warm-up, replies trained beside the listed ones
SUITE = (
    SuiteTask("gotolocal", "babyai", level="GoToLocal"),
    SuiteTask("unlockpickup", "babyai", steps=30, level="UnlockPickup", overrides=_whole_cap(1600)),
    # twice the warm-up: its replies are longer ("put yellow key next to red ball 1")
    SuiteTask("putnextlocal", "babyai", steps=45, level="PutNextLocalS6N4", overrides=_whole_cap(3200)),
    # Two more levels of three or more high-level actions (pick up the key, go to the door, open it; open one door,
    # then the other), from the listed-target warm-up with the off-list target that keeps the listed odds
    SuiteTask(
        "unlocklocal",
        "babyai",
        steps=50,
        level="UnlockLocal",
        overrides=("rollout.episode.turn_cap=8", "eval.turn_cap=8", *_LISTED_TARGETS_EVEN_ODDS),
    ),
    SuiteTask(
        "opentwodoors",
        "babyai",
        steps=50,
        level="OpenTwoDoors",
        overrides=("rollout.episode.turn_cap=10", "eval.turn_cap=10", *_LISTED_TARGETS_EVEN_ODDS),
    ),
    SuiteTask("textcraft", "textcraft"),
    SuiteTask("search-1hop", "search", level="1"),
)


def task_config(task: SuiteTask, out: Path, seed: int, quick: bool):
    base = demo_config(task.env, steps=task.steps, seed=seed, out=str(out / task.name), level=task.level)
    overrides = list(task.overrides)
    if quick:
        overrides += ["steps=2", "eval.tasks=10", "eval.every=0", "model.default.warmup.episodes=32"]
    return load(None, overrides, base=base)


@contextmanager
def heldout_env(config: TrainConfig, tasks: int):
    """(the task's env, the item ids of its first ``tasks`` held-out tasks); the env is closed on exit."""
    spec = get_env_spec(config.env.family)
    items = [t.item_id for t in heldout_tasks(config.env.family, spec.splits.test, tasks)]
    env = spec.factory(**config.env.options)
    try:
        yield env, items
    finally:
        env.close_sync()


def random_listed_success(config: TrainConfig, seed: int = 0) -> float:
    """Held-out success of the format warm-up's own player (a uniform choice among the listed actions on every
    turn), on the evaluation's tasks at its turn cap."""
    with heldout_env(config, config.eval.tasks) as (env, items):
        episodes = random_episodes(env, items, config.eval.turn_cap, seed)
    return sum(e.success for e in episodes) / len(episodes)


def shortest_listed_win(env, item_id: int, limit: int, max_frontier: int = 20_000) -> tuple[str, ...] | None:
    """The fewest listed actions that win task ``item_id`` (breadth-first, every sequence replayed from reset), or
    None if none of at most ``limit`` does (or the search grows past ``max_frontier`` sequences)."""

    def replay(actions: tuple[str, ...]):
        env.reset_sync(item_id)
        result = None
        for action in actions:
            result = env.step_sync(env.format_reply(action))
        return result

    frontier: list[tuple[str, ...]] = [()]
    for _ in range(limit):
        longer = []
        for prefix in frontier:
            replay(prefix)
            for action in env.valid_actions_sync():
                result = replay((*prefix, action))
                if result.done and result.info.get("success"):
                    return (*prefix, action)
                if not result.done:
                    longer.append((*prefix, action))
        if len(longer) > max_frontier:
            return None
        frontier = longer
    return None


def fewest_listed_actions(config: TrainConfig, tasks: int, limit: int) -> list[int | None]:
    """Per held-out task (the first ``tasks``), how many listed actions its shortest win takes (None: > limit)."""
    with heldout_env(config, tasks) as (env, items):
        wins = [shortest_listed_win(env, item, limit) for item in items]
    return [None if w is None else len(w) for w in wins]


def run_task(task: SuiteTask, out: Path, seed: int, quick: bool) -> dict:
    config = task_config(task, out, seed, quick)
    print(f"[suite] {task.name}: {config.env.family} {config.env.options}, {config.steps} steps", flush=True)
    random_success = random_listed_success(config, seed)
    summary = Trainer(config).run()
    first, last = summary["evals"][0], summary["evals"][-1]
    rows = read_metrics(Path(config.out) / "metrics.jsonl")
    return {
        "env": config.env.family,
        "options": dict(config.env.options),
        "steps": config.steps,
        "heldout_tasks": summary["heldout_tasks"],
        "eval_turn_cap": summary["eval_turn_cap"],
        "initial_success": summary["initial_success"],
        "final_success": summary["final_success"],
        "gain": summary["final_success"] - summary["initial_success"],
        "random_listed_success": random_success,
        "initial_valid_rate": first["valid_action_rate"],
        "final_valid_rate": last["valid_action_rate"],
        "initial_mean_turns": first["mean_turns"],
        "final_mean_turns": last["mean_turns"],
        "initial_success_sampled": summary["initial_success_sampled"],
        "final_success_sampled": summary["final_success_sampled"],
        "warmup_seconds": summary["warmup_seconds"],
        "wall_seconds": summary["wall_seconds"],
        # held-out success against wall seconds: step 0 after the warm-up, then every eval
        "curve": [(summary["warmup_seconds"], first["success_rate"])]
        + [(r["time/elapsed_s"], r["eval/success_rate"]) for r in rows if "eval/success_rate" in r]
        + [(summary["wall_seconds"], last["success_rate"])],
        "train_success": [r["train/success_rate"] for r in rows],
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5), dpi=110)
    for name, res in results["tasks"].items():
        minutes = [s / 60 for s, _ in res["curve"]]
        ax.plot(minutes, [v for _, v in res["curve"]], "o-", label=f"{name} ({res['gain']:+.2f})")
    ax.set_xlabel("wall minutes (warm-up included)")
    ax.set_ylabel("held-out success (greedy, free text)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: no curve hidden
    ax.set_title("learning suite: embedded model, format warm-up then RL")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def merge(paths: list[Path]) -> dict:
    """One result from several ``--json`` files of disjoint task subsets (run side by side)."""
    return merge_parts(paths, ("seed", "quick", "decoding"), "tasks")


def show(results: dict, png: Path, json_path: str | None) -> None:
    print()
    header = f"{'task':<14}{'held-out':>10}{'before':>8}{'after':>8}{'gain':>8}{'valid':>14}{'turns':>14}{'wall s':>8}"
    print(header + f"{'random':>8}")
    for name, r in results["tasks"].items():
        random_success = r.get("random_listed_success")  # absent from results written before it was measured
        print(
            f"{name:<14}{r['heldout_tasks']:>10}{r['initial_success']:>8.3f}{r['final_success']:>8.3f}"
            f"{r['gain']:>+8.3f}{r['initial_valid_rate']:>7.2f}->{r['final_valid_rate']:.2f}"
            f"{r['initial_mean_turns']:>8.2f}->{r['final_mean_turns']:.2f}{r['wall_seconds']:>8.0f}"
            + (f"{random_success:>8.3f}" if random_success is not None else f"{'-':>8}")
        )
    plot(results, png)
    print(f"plot: {png}")
    if json_path:
        print(f"json: {write_json(results, json_path)}")


def show_horizons(names: list[str], by_name: dict, tasks: int, limit: int, out: Path, json_path: str | None) -> None:
    horizons = {n: fewest_listed_actions(task_config(by_name[n], out, 0, False), tasks, limit) for n in names}
    print(f"{'task':<14}fewest listed actions that win each held-out task (-: more than {limit})")
    for name, counts in horizons.items():
        print(f"{name:<14}" + " ".join("-" if c is None else str(c) for c in counts))
    if json_path:
        print(f"json: {write_json({'limit': limit, 'horizons': horizons}, json_path)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(t.name for t in SUITE))
    parser.add_argument("--out", default="runs/bench-suite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--png", default=None)
    parser.add_argument("--report", nargs="+", type=Path, help="merge these --json results, print and plot them")
    parser.add_argument("--quick", action="store_true", help="2 steps, 10 held-out tasks, a 32-episode warm-up")
    parser.add_argument(
        "--horizon",
        type=int,
        metavar="N",
        help="train nothing: the fewest listed actions that win each of the first N held-out tasks of each task",
    )
    parser.add_argument("--horizon-limit", type=int, default=6, help="longest sequence --horizon searches")
    args = parser.parse_args()
    png = Path(args.png) if args.png else Path(args.out) / "learning_suite.png"
    if args.report:
        show(merge(args.report), png, args.json)
        return
    by_name = {t.name: t for t in SUITE}
    unknown = [n for n in args.tasks.split(",") if n not in by_name]
    if unknown:
        parser.error(f"unknown suite task(s) {', '.join(unknown)}; choose from: {', '.join(by_name)}")
    if args.horizon:
        show_horizons(args.tasks.split(","), by_name, args.horizon, args.horizon_limit, Path(args.out), args.json)
        return
    results: dict = {"seed": args.seed, "quick": args.quick, "decoding": "free text", "tasks": {}}
    for name in args.tasks.split(","):
        results["tasks"][name] = run_task(by_name[name], Path(args.out), args.seed, args.quick)
    show(results, png, args.json)


if __name__ == "__main__":
    main()
