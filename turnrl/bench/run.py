"""One rollout benchmark: the same tasks through the async engine and through lock-step, measured alike.

Invariants:
- every mode gets the same task list, a fresh generator (same seed) and a fresh env pool, so modes differ only
  in how episodes are scheduled; the task ids each mode actually reset are recorded from the envs themselves;
- a mode that passes ``time_limit_s`` is cancelled and reported as ``truncated`` with the work it did;
- a mode's figures are computed from its ``Probe`` (see ``probe``), on the wall clock of that mode alone.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from turnrl.bench.probe import Probe, ProbedEnvPool, ProbedGenerator
from turnrl.config.episode import EpisodeConfig
from turnrl.engine.generation.base import Generator
from turnrl.engine.rollout.lockstep import run_lockstep
from turnrl.engine.rollout.run import RolloutStats, run_episodes
from turnrl.envs.base import Env
from turnrl.models.chat import ChatFormat
from turnrl.protocol import Task, Trajectory

TIMELINE_BINS = 40


@dataclass
class EnvSource:
    """Where a mode's envs come from: ``open`` returns an env factory, ``close`` releases what it started."""

    open: Callable[[], Awaitable[Callable[[], Env]]]
    close: Callable[[], Awaitable[None]] = field(default=lambda: _nothing())


async def _nothing() -> None:
    return None


@dataclass
class BenchPlan:
    name: str
    tasks: list[Task]
    envs: Callable[[], EnvSource]  # a fresh source per mode
    generator: Callable[[], Awaitable[Generator]]  # a fresh generator per mode
    chat: ChatFormat
    episode: EpisodeConfig
    concurrency: int
    modes: tuple[str, ...] = ("async", "lockstep")
    time_limit_s: float | None = None
    repeats: int = 1  # rounds of every mode, interleaved (a, l, a, l, ...); each mode reports its median round
    describe: dict = field(default_factory=dict)  # what the table's title and the JSON's config say
    check: Callable[[str, list[Trajectory]], None] | None = None  # raises when a finished mode did the wrong work
    cleanup: Callable[[], None] | None = None  # run once when the plan's modes are over (e.g. a staging directory)


def quantiles(values: list[float]) -> dict[str, float | None]:
    """p50 and p99 by the nearest-rank rule (None for no values)."""
    if not values:
        return {"p50": None, "p99": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"p50": rank(0.50), "p99": rank(0.99)}


def timeline(probe: Probe, wall_s: float, bins: int = TIMELINE_BINS) -> dict:
    """Env steps per second in each of ``bins`` equal slices of the run, and episodes in flight at each slice's end."""
    width = wall_s / bins if wall_s > 0 else 1.0
    counts = [0] * bins
    for t in probe.step_times:
        counts[min(int(t / width), bins - 1)] += 1
    events = sorted(probe.episode_events)
    in_flight, level, i = [], 0, 0
    for b in range(bins):
        end = (b + 1) * width
        while i < len(events) and (events[i][0] <= end or b == bins - 1):  # the last slice takes the rest
            level += events[i][1]
            i += 1
        in_flight.append(level)
    return {
        "bin_s": width,
        "t_s": [(b + 1) * width for b in range(bins)],
        "env_steps_per_s": [c / width for c in counts],
        "in_flight": in_flight,
    }


def _decode_batch(generator: Generator) -> float | None:
    """Sequences per decode step, where the generator itself counts them (None otherwise)."""
    if hasattr(generator, "mean_running_batch"):
        return float(generator.mean_running_batch)
    batcher = getattr(getattr(generator, "engine", None), "batcher", None)
    if batcher is not None and getattr(batcher, "steps", 0):
        return batcher.tokens / batcher.steps
    return None


async def run_mode(plan: BenchPlan, mode: str) -> dict:
    """Run ``plan.tasks`` once in ``mode`` ('async' or 'lockstep') and return its figures."""
    source = plan.envs()
    factory = await source.open()
    inner = await plan.generator()
    probe = Probe()
    pool = ProbedEnvPool(factory, probe)
    generator = ProbedGenerator(inner, probe)
    stats_before = await inner.stats()
    rollout_stats = RolloutStats()
    trajectories: list[Trajectory] = []
    truncated = False
    cpu0 = time.process_time()
    probe.restart()  # the mode's wall clock and every recorded time start here
    try:
        async with asyncio.timeout(plan.time_limit_s):
            if mode == "async":
                trajectories = await run_episodes(
                    plan.tasks, pool, generator, plan.chat, plan.episode, plan.concurrency, stats=rollout_stats
                )
            else:
                trajectories = await run_lockstep(
                    plan.tasks, pool, generator, plan.chat, plan.episode, batch_size=plan.concurrency
                )
    except TimeoutError:
        truncated = True
    wall, cpu = probe.now(), time.process_time() - cpu0
    probe.finish()
    try:
        stats_after = await inner.stats()
        decode_batch = _decode_batch(inner)
    finally:
        await generator.close()
        await pool.close()
        await source.close()
    if plan.check is not None and not truncated:
        plan.check(mode, trajectories)
    model_busy = stats_after.busy_seconds - stats_before.busy_seconds
    steps = len(probe.step_times)
    started = sum(1 for _, d in probe.episode_events if d > 0)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "truncated": truncated,
        "episodes_started": started,
        "episodes_finished": len(probe.episode_events) - started,
        "env_steps": steps,
        "tokens": probe.tokens,
        "env_steps_per_s": steps / wall,
        "tokens_per_s": probe.tokens / wall,
        "generator_busy_share": (model_busy if model_busy > 0 else probe.busy_s) / wall,
        "busy_source": "generator" if model_busy > 0 else "requests outstanding",
        "running_batch": decode_batch if decode_batch is not None else probe.request_seconds / max(probe.busy_s, 1e-12),
        "running_batch_source": "decode steps" if decode_batch is not None else "requests outstanding",
        "turn_latency_s": quantiles(probe.turn_s),
        "generation_s": quantiles(probe.generation_s),
        "env_s": quantiles(probe.env_s),
        "max_in_flight": _peak(probe.episode_events),
        "overhead_us_per_step": 1e6 * cpu / steps if steps else None,
        "task_ids": sorted(probe.reset_items),
        "end_reasons": dict(Counter(t.end_reason for t in trajectories)),
        "success_rate": sum(t.success for t in trajectories) / len(trajectories) if trajectories else None,
        "timeline": timeline(probe, wall),
    }


def _peak(events: list[tuple[float, int]]) -> int:
    level = peak = 0
    for _, d in sorted(events):
        level += d
        peak = max(peak, level)
    return peak


def median_round(rounds: list[dict]) -> dict:
    """The round with the median env steps/s (the lower middle one for an even count), with every round's
    env steps/s beside it."""
    ordered = sorted(rounds, key=lambda r: r["env_steps_per_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds_env_steps_per_s"] = [r["env_steps_per_s"] for r in rounds]
    return chosen


async def run_plan(plan: BenchPlan) -> dict:
    """``plan.repeats`` rounds of every mode, interleaved so that a change in the machine's load falls on every mode
    alike; each mode reports its median round; with both modes, ``async_over_lockstep`` is the ratio of their
    median env steps/s."""
    if plan.repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {plan.repeats}")
    start = time.perf_counter()
    rounds: dict[str, list[dict]] = {mode: [] for mode in plan.modes}
    try:
        for _ in range(plan.repeats):
            for mode in plan.modes:
                rounds[mode].append(await run_mode(plan, mode))
    finally:
        if plan.cleanup is not None:
            plan.cleanup()
    modes = {mode: median_round(runs) for mode, runs in rounds.items()}
    result = {"workload": plan.name, "config": plan.describe, "episodes": len(plan.tasks), "modes": modes}
    if "async" in modes and "lockstep" in modes:
        lock = modes["lockstep"]["env_steps_per_s"]
        result["async_over_lockstep"] = modes["async"]["env_steps_per_s"] / lock if lock > 0 else None
    result["wall_s"] = time.perf_counter() - start
    return result
