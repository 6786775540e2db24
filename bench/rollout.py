"""Rollout benchmark: the async engine against AgentGym-RL's lock-step baseline, on the same components.

Workload (b), the fixed agentic workload (figures comparable from run to run; do not tune it): 2048 episodes
through 256 concurrent slots, 1..8 turns, tokens per turn lognormal (median 64, p99 512, cap 512), env latency
lognormal (median 20 ms, p99 2 s, cap 10 s), a latency-model generator (decode step 10 ms + 0.04 ms x running,
at most 256 running, continuous batching). ``--time-scale`` shrinks every latency uniformly. Also measured:
the engine's CPU per env step with zero-latency envs and a zero-cost generator, and one run with 4096
episodes in flight at once (peak RSS; 1024 with --quick).

Workload (a): real BabyAI (GoToLocal) and TextCraft with the embedded tiny model (untrained weights)
through ``LocalGenerator``: async with in-process envs, async with envs in 2 EnvWorker processes, and
lock-step (a family missing from the env registry is reported as not run).

    python bench/rollout.py --json bench/results/rollout.json            # full (about 4 minutes)
    python bench/rollout.py --quick                                      # under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import time
from pathlib import Path

import msgspec
import torch
from latency_model import LatencyModelGenerator, SyntheticEnv, Workload, WorkloadConfig

from turnrl.config.envs import EnvWorkerConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.rollout.lockstep import run_lockstep
from turnrl.engine.rollout.run import EnvPool, RolloutStats, run_episodes
from turnrl.engine.training.warmup import random_episodes
from turnrl.envs.babyai import BabyAIEnv
from turnrl.envs.registry import env_names, make_env
from turnrl.envs.zmq.pool import EnvWorkerPool
from turnrl.models.chat import ChatFormat
from turnrl.models.tiny import build_tiny_model
from turnrl.models.tokenizer import train_tokenizer
from turnrl.protocol import Task


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def babyai_chat() -> tuple[ChatFormat, object]:
    env = BabyAIEnv("GoToLocal")
    texts = [env.system_prompt]
    for ep in random_episodes(env, list(range(40)), 3, seed=0):
        texts.extend(ep.observations)
        texts.extend(ep.replies)
    tokenizer = train_tokenizer(texts, vocab_size=600)
    return ChatFormat(tokenizer), tokenizer


# ---- workload (b) ----------------------------------------------------------------------------------
def synthetic_episode_config(wl: Workload) -> EpisodeConfig:
    c = wl.config
    return EpisodeConfig(
        turn_cap=c.max_turns,
        max_new_tokens=c.tokens_cap,
        max_total_tokens=(c.tokens_cap + 64) * (c.max_turns + 1),
        env_timeout_s=2 * c.env_cap_s * c.time_scale + 1.0,
    )


async def synthetic_run(wl: Workload, chat: ChatFormat, mode: str, zero: bool = False) -> dict:
    c = wl.config
    generator = LatencyModelGenerator(wl, zero_cost=zero)
    pool = EnvPool(lambda: SyntheticEnv(wl, zero_latency=zero))
    tasks = [Task(env="synthetic", item_id=i, group=i) for i in range(c.episodes)]
    config = synthetic_episode_config(wl)
    stats = RolloutStats()
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    if mode == "async":
        trajs = await run_episodes(tasks, pool, generator, chat, config, concurrency=c.slots, stats=stats)
    else:
        trajs = await run_lockstep(tasks, pool, generator, chat, config, batch_size=c.slots)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await generator.close()
    steps = sum(len(t.turns) for t in trajs)
    tokens = sum(t.num_policy_tokens for t in trajs)
    bad = [t.end_reason for t in trajs if t.end_reason != "done"]
    if bad or steps != wl.total_steps or tokens != wl.total_tokens:
        raise RuntimeError(
            f"{mode}: the run did not do the planned work ({len(bad)} not done: {bad[:3]}, "
            f"{steps}/{wl.total_steps} steps, {tokens}/{wl.total_tokens} tokens)"
        )
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "env_steps": steps,
        "tokens": tokens,
        "env_steps_per_s": steps / wall,
        "tokens_per_s": tokens / wall,
        "generator_busy_fraction": generator.busy_s / wall,
        "mean_running_batch": generator.mean_running_batch,
        "decode_steps": generator.steps,
        "max_concurrent_episodes": stats.max_in_flight if mode == "async" else min(c.slots, c.episodes),
        "overhead_us_per_step": 1e6 * cpu / steps,
    }


def workload_b(args, chat: ChatFormat) -> dict:
    base = WorkloadConfig(time_scale=args.time_scale)
    if args.quick:
        base = msgspec.structs.replace(base, episodes=512)
    wl = Workload(base)
    print(
        f"[rollout] (b) {base.episodes} episodes, {base.slots} slots, {wl.total_steps} env steps, "
        f"{wl.total_tokens} tokens, time scale {base.time_scale:g}",
        flush=True,
    )
    out = {"time_scale": base.time_scale, "episodes": base.episodes, "slots": base.slots, "ideal_s": wl.ideal_seconds()}
    out["async"] = asyncio.run(synthetic_run(wl, chat, "async"))
    print(f"[rollout] (b) async done in {out['async']['wall_s']:.1f} s", flush=True)
    out["sync"] = asyncio.run(synthetic_run(wl, chat, "sync"))
    print(f"[rollout] (b) sync done in {out['sync']['wall_s']:.1f} s", flush=True)
    zero = Workload(msgspec.structs.replace(base, episodes=1024 if args.quick else 4096))
    out["overhead"] = [
        asyncio.run(synthetic_run(zero, chat, "async", zero=True))["overhead_us_per_step"] for _ in range(3)
    ]
    many = 1024 if args.quick else 4096
    scale = Workload(msgspec.structs.replace(base, episodes=many, slots=many, time_scale=base.time_scale * 0.2))
    out["scale"] = asyncio.run(synthetic_run(scale, chat, "async"))
    out["scale"]["time_scale"] = scale.config.time_scale
    out["scale"]["peak_rss_mb"] = peak_rss_mb()
    print(f"[rollout] (b) {many} in flight done in {out['scale']['wall_s']:.1f} s", flush=True)
    return out


# ---- workload (a) ----------------------------------------------------------------------------------
REAL_ENVS = {"babyai": ({"level": "GoToLocal"}, 0), "textcraft": ({}, 100)}  # options, first train item


async def real_run(model, tokenizer, chat, family: str, tasks, mode: str, concurrency: int, turn_cap: int) -> dict:
    options = REAL_ENVS[family][0]
    generator = LocalGenerator(model, tokenizer.pad_token_id, max_batch=concurrency, seed=0)
    workers = await EnvWorkerPool(EnvWorkerConfig(workers=2)).start() if mode == "async+workers" else None
    pool = EnvPool((lambda: workers.env(family, **options)) if workers else (lambda: make_env(family, **options)))
    config = EpisodeConfig(turn_cap=turn_cap, max_new_tokens=24)
    t0 = time.perf_counter()
    if mode.startswith("async"):
        trajs = await run_episodes(tasks, pool, generator, chat, config, concurrency=concurrency)
    else:
        trajs = await run_lockstep(tasks, pool, generator, chat, config, batch_size=concurrency)
    wall = time.perf_counter() - t0
    await generator.close()
    await pool.close()
    if workers is not None:
        await workers.close()
    steps = sum(len(t.turns) for t in trajs)
    errors = [t.error for t in trajs if t.end_reason == "env_error"]
    if errors:
        raise RuntimeError(f"{family} {mode}: env errors: {errors[:3]}")
    batcher = generator.engine.batcher  # rows sampled per forward (prefill or decode step) of the continuous batch
    return {
        "wall_s": wall,
        "env_steps_per_s": steps / wall,
        "tokens_per_s": sum(t.num_policy_tokens for t in trajs) / wall,
        "generator_busy_fraction": generator.engine.busy_seconds / wall,
        "mean_running_batch": batcher.tokens / max(batcher.steps, 1),
    }


def workload_a(args, chat, tokenizer) -> dict:
    torch.manual_seed(0)
    model = build_tiny_model(tokenizer, "tiny", max_positions=2048, seed=0).eval()
    episodes, concurrency, turn_cap = (8, 8, 4) if args.quick else (48, 16, 6)
    out = {}
    for family in [f for f in REAL_ENVS if f in env_names()]:
        first = REAL_ENVS[family][1]
        tasks = [Task(env=family, item_id=first + i, group=i) for i in range(episodes)]
        print(f"[rollout] (a) {family}, {episodes} episodes, {concurrency} slots", flush=True)
        row = {"episodes": episodes, "slots": concurrency, "turn_cap": turn_cap}
        with torch.inference_mode():
            asyncio.run(real_run(model, tokenizer, chat, family, tasks[:4], "sync", 4, 2))  # warm-up, not timed
            for mode in ("async", "async+workers", "sync"):
                row[mode] = asyncio.run(real_run(model, tokenizer, chat, family, tasks, mode, concurrency, turn_cap))
        out[family] = row
    return out


def table(results: dict) -> str:
    b = results["b"]
    lines = [
        f"workload (b), synthetic agentic, time scale {b['time_scale']:g} ({b['episodes']} episodes, "
        f"{b['slots']} slots; ideal {b['ideal_s']:.1f} s)",
        f"{'mode':<8}{'wall s':>9}{'busy':>7}{'batch':>8}{'steps/s':>10}{'tokens/s':>11}",
    ]
    for mode in ("async", "sync"):
        r = b[mode]
        lines.append(
            f"{mode:<8}{r['wall_s']:>9.1f}{r['generator_busy_fraction']:>7.2f}"
            f"{r['mean_running_batch']:>8.1f}{r['env_steps_per_s']:>10.0f}{r['tokens_per_s']:>11.0f}"
        )
    s = results["summary"]
    lines += [
        f"async_speedup {s['async_speedup']:.2f}  efficiency_vs_ideal {s['efficiency_vs_ideal']:.3f}  "
        f"overhead_us_per_step {s['overhead_us_per_step']:.1f} (median of 3, zero-latency env, zero-cost "
        f"generator)",
        f"{s['max_concurrent_episodes']} episodes at once (time scale {b['scale']['time_scale']:g}): "
        f"wall {b['scale']['wall_s']:.1f} s, peak_rss_mb {s['peak_rss_mb']:.0f}",
    ]
    for family, a in results["a"].items():
        lines += [
            "",
            f"workload (a), real {' '.join([family, *map(str, REAL_ENVS[family][0].values())])} + embedded "
            f"tiny model (untrained), "
            f"{a['episodes']} episodes, {a['slots']} slots, turn cap {a['turn_cap']}",
            f"{'mode':<14}{'wall s':>9}{'busy':>7}{'batch':>8}{'steps/s':>10}{'tokens/s':>11}",
        ]
        for mode in ("async", "async+workers", "sync"):
            r = a[mode]
            lines.append(
                f"{mode:<14}{r['wall_s']:>9.1f}{r['generator_busy_fraction']:>7.2f}"
                f"{r['mean_running_batch']:>8.1f}{r['env_steps_per_s']:>10.1f}{r['tokens_per_s']:>11.0f}"
            )
        lines.append(
            f"async_speedup (a, {family}) {a['sync']['wall_s'] / a['async']['wall_s']:.2f} in-process envs, "
            f"{a['sync']['wall_s'] / a['async+workers']['wall_s']:.2f} with 2 EnvWorker processes"
        )
    missing = [f for f in REAL_ENVS if f not in results["a"]]
    if missing:
        lines.append(f"(a) not run, not in the repository: {', '.join(missing)}")
    return "\n".join(lines)


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
    if args.time_scale is None:
        args.time_scale = 0.05 if args.quick else 0.25
    if not args.time_scale > 0:
        parser.error("--time-scale must be > 0")
    start = time.perf_counter()
    chat, tokenizer = babyai_chat()
    results = {"b": workload_b(args, chat)}
    b = results["b"]
    overhead = sorted(b["overhead"])[len(b["overhead"]) // 2]
    results["summary"] = {
        "workload": "b",
        "time_scale": b["time_scale"],
        "async_speedup": b["sync"]["wall_s"] / b["async"]["wall_s"],
        "generator_busy_fraction": b["async"]["generator_busy_fraction"],
        "mean_running_batch": b["async"]["mean_running_batch"],
        "efficiency_vs_ideal": b["ideal_s"] / b["async"]["wall_s"],
        "overhead_us_per_step": overhead,
        "env_steps_per_s": b["async"]["env_steps_per_s"],
        "tokens_per_s": b["async"]["tokens_per_s"],
        "max_concurrent_episodes": b["scale"]["max_concurrent_episodes"],
        "peak_rss_mb": b["scale"]["peak_rss_mb"],
    }
    if not args.skip_a:
        results["a"] = workload_a(args, chat, tokenizer)
    results["wall_s"] = time.perf_counter() - start
    print(table(results) if "a" in results else json.dumps(results["summary"], indent=1))
    print(f"[rollout] total {results['wall_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**results["summary"], "details": results}, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
