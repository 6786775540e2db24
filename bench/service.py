"""The generation engine on a Poisson request stream, in process and behind ZeroMQ, and its prefix reuse in a rollout.

Stream: requests arrive as a Poisson stream (fixed seed) with lognormal output lengths and no stop tokens, so
every path produces exactly the same number of tokens. Figures: tokens/s over the stream's wall time; request
latency from each request's scheduled arrival (median, p90, mean); the model's busy seconds (time inside the
engine's forward steps, thread hand-off included); CPU seconds (the client process, all threads, plus the service
process; less sensitive than wall time to other load on the machine). Paths: ``local`` is ``LocalGenerator`` in
the client's process, ``service`` the GenerationService in its own process over ZeroMQ (max 256 running); one
torch thread each. Each repeat is a fresh process per checkout that loads the same model directory and replays
the stream ``--replays`` times through each path (path order alternating, a fresh generator warmed up on 4
untimed requests each time). ``--baseline PATH`` runs this same harness against the checkout at PATH
(``PYTHONPATH=PATH``; its package layout is detected, and the imported package is checked to be PATH's),
interleaved with this checkout (code order alternating per repeat), and reports paired ratios (median over
replays) against the baseline's service and local paths. In the code before the engine, ``local`` was
batch-at-a-time (the pending requests decoded to the end, no joining) and the service batched continuously.

Rollout (this checkout only): BabyAI GoToLocal with the same untrained tiny model, groups of 4 episodes on one item
(one prompt per group), all episodes at once, through ``LocalGenerator`` and through the service, each with
per-session prefix reuse (default ``kv_cache_tokens``) and without (``kv_cache_tokens=0``; identical prompts
admitted together are still prefilled once), interleaved. Per turn (= generate request): prompt tokens, tokens
prefilled, tokens reused from the session's cache, tokens shared with an identical prompt; prefix hit rate (all
lookups, and lookups after each episode's first turn, which cannot hit); rollout wall time and model busy time.

    python bench/service.py --baseline /tmp/base --json bench/results/service.json   # about 4-5 min on 2 cores
    python bench/service.py --quick                                                 # about a minute
    python bench/service.py --only rollout --rollout-repeats 5                      # one section
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from turnrl.models.loading import load_policy
from turnrl.protocol import GenerateRequest, SamplingParams

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
FIGURES = ("tokens_per_s", "latency_p50_s", "latency_p90_s", "latency_mean_s", "wall_s", "busy_s", "cpu_s")


# ---- the stream (runs under either package layout) -------------------------------------------------------------
def workload(n: int, mean_gap_s: float, seed: int, vocab: int, prefix: str = "r"):
    rng = random.Random(seed)
    at, stream = 0.0, []
    for i in range(n):
        at += rng.expovariate(1 / mean_gap_s) if mean_gap_s > 0 else 0.0
        new = min(128, max(4, round(math.exp(rng.gauss(math.log(24), 0.8)))))
        ids = [rng.randrange(5, vocab) for _ in range(rng.randint(16, 64))]
        stream.append(
            (at, GenerateRequest(request_id=f"{prefix}{i}", input_ids=ids, sampling=SamplingParams(max_new_tokens=new)))
        )
    return stream


def generation_api():
    """LocalGenerator, ServiceConfig, ServiceGenerator, ServiceProcess of whichever turnrl is importable."""
    try:  # the layout with turnrl/engine/generation/ as a package
        from turnrl.config.generation import ServiceConfig
        from turnrl.engine.generation.local import LocalGenerator
        from turnrl.engine.generation.service_client import ServiceGenerator, ServiceProcess
    except ImportError:  # the earlier flat layout: turnrl/engine/{generation,service,service_client}.py
        flat = {
            name: importlib.import_module(f"turnrl.engine.{name}")
            for name in ("generation", "service", "service_client")
        }
        return (
            flat["generation"].LocalGenerator,
            flat["service"].ServiceConfig,
            flat["service_client"].ServiceGenerator,
            flat["service_client"].ServiceProcess,
        )
    return LocalGenerator, ServiceConfig, ServiceGenerator, ServiceProcess


async def busy_seconds(generator) -> float:
    if hasattr(generator, "busy_seconds"):
        return generator.busy_seconds
    return (await generator.stats()).busy_seconds


async def replay(generator, stream) -> dict:
    start = time.perf_counter()
    latencies: list[float] = []

    async def one(at: float, request: GenerateRequest) -> int:
        await asyncio.sleep(max(0.0, at - (time.perf_counter() - start)))
        result = await generator.generate(request)
        latencies.append(time.perf_counter() - start - at)  # from the request's scheduled arrival
        return len(result.output_ids)

    tokens = sum(await asyncio.gather(*(one(at, r) for at, r in stream)))
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "wall_s": round(wall, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "latency_p50_s": round(statistics.median(latencies), 4),
        "latency_p90_s": round(latencies[int(0.9 * (len(latencies) - 1))], 4),
        "latency_mean_s": round(statistics.fmean(latencies), 4),
    }


def cpu_seconds(service_pid: int | None) -> float:
    """CPU time of this process (all threads) plus the service process's, if any (Linux ``/proc``)."""
    total = time.process_time()
    if service_pid is not None:
        fields = Path(f"/proc/{service_pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


async def measure(generator, stream, warm, service_pid: int | None) -> dict:
    try:
        await asyncio.gather(*(generator.generate(r) for _, r in warm))
        busy, cpu = await busy_seconds(generator), cpu_seconds(service_pid)
        row = await replay(generator, stream)
        row["cpu_s"] = round(cpu_seconds(service_pid) - cpu, 3)
        row["busy_s"] = round(await busy_seconds(generator) - busy, 3)
        return row
    finally:
        await generator.close()


def child(args) -> None:
    """One process, one checkout: ``--replays`` rounds of the stream through both paths, the order alternating
    (``--child-modes`` gives the first round's); each replay is a fresh generator, warmed up first."""
    import turnrl

    local_cls, config_cls, client_cls, process_cls = generation_api()
    torch.set_num_threads(1)
    model, tokenizer = load_policy(args.model)
    stream = workload(args.requests, args.mean_gap_ms / 1000, seed=0, vocab=len(tokenizer))
    warm = workload(4, 0.0, seed=1, vocab=len(tokenizer), prefix="warm")
    modes = args.child_modes.split(",")
    config = config_cls(
        model_path=str(args.model),
        address=f"ipc://{args.workdir}/bench-{os.getpid()}.sock",
        torch_threads=1,
        max_running=256,
    )
    out = {"turnrl": turnrl.__file__, **{mode: [] for mode in modes}}
    with process_cls(config) as service:  # idle (blocked on its socket) while the local path runs
        for replay_round in range(args.replays):
            for mode in modes if replay_round % 2 == 0 else modes[::-1]:
                if mode == "local":
                    run = measure(local_cls(model, tokenizer.pad_token_id), stream, warm, None)
                else:
                    run = measure(client_cls(config.address), stream, warm, service.process.pid)
                out[mode].append(asyncio.run(run))
    Path(args.child_out).write_text(json.dumps(out))


def run_child(root: Path, modes: list[str], args, model: Path, workdir: Path) -> dict:
    out = workdir / f"child-{time.monotonic_ns()}.json"
    command = [
        sys.executable,
        str(HERE),
        "--child",
        "--model",
        str(model),
        "--requests",
        str(args.requests),
        "--mean-gap-ms",
        str(args.mean_gap_ms),
        "--replays",
        str(args.replays),
        "--child-modes",
        ",".join(modes),
        "--child-out",
        str(out),
        "--workdir",
        str(workdir),
    ]
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(root)})
    result = json.loads(out.read_text())
    if not Path(result["turnrl"]).resolve().is_relative_to(root):
        raise RuntimeError(f"the run meant for {root} imported turnrl from {result['turnrl']}")
    return result


def median_row(runs: list[dict]) -> dict:
    row = {key: round(statistics.median(r[key] for r in runs), 4) for key in FIGURES}
    row["tokens"] = runs[0]["tokens"]
    row["tokens_per_s_range"] = [min(r["tokens_per_s"] for r in runs), max(r["tokens_per_s"] for r in runs)]
    row["runs"] = runs
    return row


def paired(num: list[dict], den: list[dict], key: str) -> float:
    return round(statistics.median(a[key] / b[key] for a, b in zip(num, den, strict=True)), 3)


def stream_section(args, model: Path, workdir: Path) -> dict:
    codes = [("new", REPO)] + ([("baseline", args.baseline)] if args.baseline else [])
    runs: dict[str, list[dict]] = {f"{c}_{m}": [] for c, _ in codes for m in ("local", "service")}
    for repeat in range(args.repeats):
        order = codes if repeat % 2 == 0 else codes[::-1]
        modes = ["local", "service"] if (repeat // 2) % 2 == 0 else ["service", "local"]
        for name, root in order:
            print(
                f"[service] stream repeat {repeat + 1}/{args.repeats}: {name} ({root}) {' then '.join(modes)}",
                flush=True,
            )
            result = run_child(root, modes, args, model, workdir)
            for mode in modes:
                runs[f"{name}_{mode}"].extend(result[mode])
    rows = {key: median_row(value) for key, value in runs.items()}
    tokens = {row["tokens"] for row in rows.values()}
    if len(tokens) != 1:
        raise RuntimeError(f"the paths generated different token counts: {tokens}")
    out = {
        "requests": args.requests,
        "mean_gap_ms": args.mean_gap_ms,
        "repeats": args.repeats,
        "replays": args.replays,
        "baseline": str(args.baseline) if args.baseline else None,
        **rows,
    }
    ratios = {}
    for new in ("new_local", "new_service"):
        for base in ("baseline_service", "baseline_local") if args.baseline else ("new_service",):
            if new == base:
                continue
            ratios[f"{new}/{base}"] = {
                key: paired(runs[new], runs[base], key)
                for key in ("tokens_per_s", "latency_p50_s", "latency_p90_s", "busy_s", "cpu_s")
            }
    out["ratios"] = ratios
    return out


def stream_table(s: dict) -> str:
    base = f", baseline {s['baseline']}" if s["baseline"] else ""
    lines = [
        f"stream: {s['requests']} requests, Poisson arrivals every {s['mean_gap_ms']:g} ms on average, lognormal "
        f"lengths (median 24); medians of {s['repeats']} interleaved processes x {s['replays']} replays{base}",
        f"{'path':<18}{'tokens':>7}{'tokens/s':>10}{'(min-max)':>15}{'p50 s':>9}{'p90 s':>9}{'mean s':>9}"
        f"{'wall s':>8}{'busy s':>8}{'cpu s':>8}",
    ]
    for key in ("baseline_local", "baseline_service", "new_local", "new_service"):
        if key not in s:
            continue
        r = s[key]
        lo, hi = r["tokens_per_s_range"]
        lines.append(
            f"{key:<18}{r['tokens']:>7}{r['tokens_per_s']:>10.1f}{f'{lo:.0f}-{hi:.0f}':>15}"
            f"{r['latency_p50_s']:>9.3f}{r['latency_p90_s']:>9.3f}{r['latency_mean_s']:>9.3f}"
            f"{r['wall_s']:>8.2f}{r['busy_s']:>8.2f}{r['cpu_s']:>8.2f}"
        )
    lines.append("paired ratios (median over replays): tokens/s (>1 better); latency, busy s, cpu s (<1 better)")
    for name, r in s["ratios"].items():
        lines.append(
            f"  {name:<34} tokens/s {r['tokens_per_s']:.2f}x  p50 {r['latency_p50_s']:.2f}x  "
            f"p90 {r['latency_p90_s']:.2f}x  busy {r['busy_s']:.2f}x  cpu {r['cpu_s']:.2f}x"
        )
    return "\n".join(lines)


# ---- the rollout (this checkout only) --------------------------------------------------------------------------
async def rollout_once(generator, chat, pool, tasks, config) -> dict:
    from turnrl.engine.rollout.run import run_episodes

    before = await generator.stats()
    start = time.perf_counter()
    trajectories = await run_episodes(tasks, pool, generator, chat, config, concurrency=len(tasks))
    wall = time.perf_counter() - start
    after = await generator.stats()
    bad = [t.end_reason for t in trajectories if t.end_reason not in ("done", "turn_cap")]
    if bad:
        raise RuntimeError(f"episodes ended badly: {bad[:3]}")
    d = {
        key: getattr(after, key) - getattr(before, key)
        for key in (
            "requests_finished",
            "tokens_generated",
            "busy_seconds",
            "prefill_tokens",
            "reused_tokens",
            "shared_prefill_tokens",
            "prefix_lookups",
            "prefix_hits",
        )
    }
    turns = d["requests_finished"]
    prompt = sum(t.action_start for tr in trajectories for t in tr.turns)
    episodes = sum(1 for tr in trajectories if tr.turns)
    later = d["prefix_lookups"] - episodes  # each episode's first turn has nothing cached
    return {
        "wall_s": round(wall, 3),
        "busy_s": round(d["busy_seconds"], 3),
        "episodes": len(trajectories),
        "turns": turns,
        "tokens_generated": d["tokens_generated"],
        "prompt_tokens": prompt,
        "prefill_tokens": d["prefill_tokens"],
        "reused_tokens": d["reused_tokens"],
        "shared_prefill_tokens": d["shared_prefill_tokens"],
        "prefix_lookups": d["prefix_lookups"],
        "prefix_hits": d["prefix_hits"],
        "prompt_tokens_per_turn": round(prompt / turns, 1),
        "prefill_tokens_per_turn": round(d["prefill_tokens"] / turns, 1),
        "reused_tokens_per_turn": round(d["reused_tokens"] / turns, 1),
        "shared_tokens_per_turn": round(d["shared_prefill_tokens"] / turns, 1),
        "hit_rate": round(d["prefix_hits"] / d["prefix_lookups"], 3) if d["prefix_lookups"] else 0.0,
        "hit_rate_after_first_turn": round(d["prefix_hits"] / later, 3) if later > 0 else 0.0,
    }


def rollout_section(args, model_dir: Path, workdir: Path) -> dict:
    from turnrl.config.episode import EpisodeConfig
    from turnrl.engine.rollout.run import EnvPool
    from turnrl.envs.babyai import BabyAIEnv
    from turnrl.models.chat import ChatFormat
    from turnrl.protocol import Task

    local_cls, config_cls, client_cls, process_cls = generation_api()
    torch.set_num_threads(1)
    model, tokenizer = load_policy(model_dir)
    chat = ChatFormat(tokenizer)
    items, group, turn_cap = (4, 4, 3) if args.quick else (8, 4, 6)
    tasks = [Task(env="babyai", item_id=i, group=i) for i in range(items) for _ in range(group)]
    config = EpisodeConfig(turn_cap=turn_cap, max_new_tokens=24, temperature=1.0)
    pool = EnvPool(lambda: BabyAIEnv("GoToLocal"))
    services = {
        reuse: process_cls(
            config_cls(
                model_path=str(model_dir),
                torch_threads=1,
                max_running=256,
                address=f"ipc://{workdir}/rollout-{reuse}.sock",
                kv_cache_tokens=2_000_000 if reuse == "on" else 0,
            )
        )
        for reuse in ("on", "off")
    }

    def generator(path: str, reuse: str):
        if path == "local":
            return local_cls(
                model, tokenizer.pad_token_id, max_batch=256, kv_cache_tokens=2_000_000 if reuse == "on" else 0
            )
        return client_cls(services[reuse].config.address)

    async def once(path: str, reuse: str, run_tasks) -> dict:
        gen = generator(path, reuse)
        try:
            return await rollout_once(gen, chat, pool, run_tasks, config)
        finally:
            await gen.close()

    keys = [(p, r) for p in ("local", "service") for r in ("on", "off")]
    runs: dict[str, list[dict]] = {f"{p}_reuse_{r}": [] for p, r in keys}
    try:
        for service in services.values():
            service.start()
        for p, r in keys:  # warm-up: every path once, envs created, not timed
            asyncio.run(once(p, r, tasks[: 2 * group]))
        for repeat in range(args.rollout_repeats):
            order = keys[repeat % len(keys) :] + keys[: repeat % len(keys)]
            print(f"[service] rollout repeat {repeat + 1}/{args.rollout_repeats}", flush=True)
            for p, r in order:
                runs[f"{p}_reuse_{r}"].append(asyncio.run(once(p, r, tasks)))
    finally:
        for service in services.values():
            service.stop()
        asyncio.run(pool.close())
    out = {
        "env": "babyai GoToLocal",
        "episodes": len(tasks),
        "group_size": group,
        "turn_cap": turn_cap,
        "max_new_tokens": config.max_new_tokens,
        "repeats": args.rollout_repeats,
    }
    for key, value in runs.items():
        row = {k: round(statistics.median(r[k] for r in value), 4) for k in value[0]}
        row["runs"] = value
        out[key] = row
    out["ratios"] = {
        f"{p}_reuse_on/{p}_reuse_off": {
            k: paired(runs[f"{p}_reuse_on"], runs[f"{p}_reuse_off"], k)
            for k in ("wall_s", "busy_s", "prefill_tokens_per_turn")
        }
        for p in ("local", "service")
    }
    return out


def rollout_table(r: dict) -> str:
    lines = [
        f"rollout: {r['env']}, {r['episodes']} episodes at once ({r['episodes'] // r['group_size']} items x "
        f"{r['group_size']}), turn cap {r['turn_cap']}, {r['max_new_tokens']} new tokens per turn; medians of "
        f"{r['repeats']} interleaved repeats; per turn = per generate request",
        f"{'path':<20}{'turns':>6}{'prompt/t':>9}{'prefill/t':>10}{'reused/t':>9}{'shared/t':>9}{'shared':>7}"
        f"{'hit':>6}{'hit>1':>7}{'wall s':>8}{'busy s':>8}",
    ]
    for key in ("local_reuse_on", "local_reuse_off", "service_reuse_on", "service_reuse_off"):
        x = r[key]
        lines.append(
            f"{key:<20}{x['turns']:>6.0f}{x['prompt_tokens_per_turn']:>9.1f}{x['prefill_tokens_per_turn']:>10.1f}"
            f"{x['reused_tokens_per_turn']:>9.1f}{x['shared_tokens_per_turn']:>9.1f}"
            f"{x['shared_prefill_tokens']:>7.0f}{x['hit_rate']:>6.2f}{x['hit_rate_after_first_turn']:>7.2f}"
            f"{x['wall_s']:>8.2f}{x['busy_s']:>8.2f}"
        )
    lines.append("paired ratios reuse on/off (median over repeats)")
    for name, x in r["ratios"].items():
        lines.append(
            f"  {name:<34} wall {x['wall_s']:.2f}x  busy {x['busy_s']:.2f}x  prefill/turn "
            f"{x['prefill_tokens_per_turn']:.2f}x"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--mean-gap-ms", type=float, default=40.0)
    parser.add_argument("--repeats", type=int, default=4, help="stream: fresh processes per checkout")
    parser.add_argument("--replays", type=int, default=2, help="stream: replays per path in each process")
    parser.add_argument("--rollout-repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a checkout of earlier code to run the same stream against")
    parser.add_argument("--model", type=Path, help="model directory (default: the tiny smoke model)")
    parser.add_argument("--only", choices=("stream", "rollout"), help="run one section")
    parser.add_argument("--quick", action="store_true", help="16 requests, 2 repeats; a 16-episode rollout once")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-modes", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.requests, args.repeats, args.replays, args.rollout_repeats = 16, 2, 1, 1
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
        if not (args.baseline / "turnrl" / "__init__.py").is_file():
            parser.error(f"--baseline {args.baseline}: no turnrl package there")
    start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="turnrl-bench-service-") as tmp:  # the model (if built), sockets
        workdir = Path(tmp)
        if args.model is None:
            from generation_smoke import build_model

            args.model = build_model(workdir / "policy")
        if args.only != "rollout":
            results["stream"] = stream_section(args, args.model, workdir)
            print(stream_table(results["stream"]), flush=True)
        if args.only != "stream":
            results["rollout"] = rollout_section(args, args.model, workdir)
            print(rollout_table(results["rollout"]))
    results["wall_s"] = round(time.perf_counter() - start, 1)
    print(f"[service] total {results['wall_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
