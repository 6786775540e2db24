"""Soak: many create/reset/close cycles per env family, through the AgentGym HTTP server and through an EnvWorker;
the serving process's RSS and open file descriptors before and after.

Invariant: the serving process is real and fresh per (family, transport); a warm-up of cycles runs first so that
one-time allocations (imports, indexes, a browser, caches) do not count; then RSS (``/proc/<pid>/status``) and open
descriptors (``/proc/<pid>/fd``) are read, the cycles run, and both are read again. Flat means after <= 1.05 x
before (goal). A cycle resets a seeded random training item.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import httpx
from chaos_fuzz import rss_mb

from turnrl.config.envs import EnvWorkerConfig
from turnrl.envs.http.launch import running_server
from turnrl.envs.registry import get_env_spec
from turnrl.envs.zmq.pool import EnvWorkerPool

FLAT = 1.05


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _items(family: str, seed: int, n: int) -> list[int]:
    rng = random.Random(f"{seed}-{family}")
    train = get_env_spec(family).splits.train
    return [train[rng.randrange(len(train))] for _ in range(n)]


def _row(family: str, transport: str, cycles: int, pid: int, before: tuple, after: tuple, wall: float) -> dict:
    (rss0, fd0), (rss1, fd1) = before, after
    return {
        "family": family,
        "transport": transport,
        "cycles": cycles,
        "rss_before_mb": round(rss0, 1),
        "rss_after_mb": round(rss1, 1),
        "rss_ratio": round(rss1 / rss0, 3),
        "fds_before": fd0,
        "fds_after": fd1,
        "fd_ratio": round(fd1 / fd0, 3),
        "flat": rss1 <= FLAT * rss0 and fd1 <= FLAT * fd0,
        "cycles_per_s": round(cycles / wall, 1) if wall > 0 else None,
    }


def soak_http(family: str, cycles: int, warmup: int, seed: int) -> dict:
    items = _items(family, seed, warmup + cycles)
    with running_server(family, startup_timeout_s=180.0) as (base, process), httpx.Client(timeout=120.0) as client:

        def cycle(item: int) -> None:
            env_id = client.post(f"{base}/create").raise_for_status().json()["id"]
            client.post(f"{base}/reset", json={"id": env_id, "data_idx": item}).raise_for_status()
            client.post(f"{base}/close", json={"id": env_id}).raise_for_status()

        for item in items[:warmup]:
            cycle(item)
        before = (rss_mb(process.pid), open_fds(process.pid))
        start = time.perf_counter()
        for item in items[warmup:]:
            cycle(item)
        wall = time.perf_counter() - start
        after = (rss_mb(process.pid), open_fds(process.pid))
        return _row(family, "HTTP server", cycles, process.pid, before, after, wall)


async def soak_worker(family: str, cycles: int, warmup: int, seed: int) -> dict:
    items = _items(family, seed, warmup + cycles)
    async with EnvWorkerPool(EnvWorkerConfig(workers=1, start_timeout_s=180.0, heartbeat_timeout_s=30.0)) as pool:
        pid = pool.pids()[0]

        async def cycle(item: int) -> None:
            env = pool.env(family)
            await env.reset(item)
            await env.close()

        for item in items[:warmup]:
            await cycle(item)
        before = (rss_mb(pid), open_fds(pid))
        start = time.perf_counter()
        for item in items[warmup:]:
            await cycle(item)
        wall = time.perf_counter() - start
        after = (rss_mb(pid), open_fds(pid))
        if pool.restarts:
            raise RuntimeError(f"the env worker was restarted {pool.restarts} times during the soak")
        return _row(family, "env worker", cycles, pid, before, after, wall)


def soak_section(plan: dict[str, int], seed: int, unavailable: dict[str, str | None]) -> dict:
    rows, not_run = [], {}
    for family, cycles in plan.items():
        if unavailable.get(family):
            not_run[family] = unavailable[family]
            continue
        warmup = max(2, min(50, cycles // 10))
        for transport in ("HTTP server", "env worker"):
            print(f"[chaos] soak: {family} through the {transport}, {cycles} cycles", flush=True)
            if transport == "HTTP server":
                rows.append(soak_http(family, cycles, warmup, seed))
            else:
                rows.append(asyncio.run(soak_worker(family, cycles, warmup, seed)))
    return {"flat_within": FLAT, "rows": rows, "not_run": not_run}


def soak_table(section: dict) -> str:
    lines = [
        "soak: create/reset/close cycles after a warm-up; the serving process's RSS and open descriptors "
        f"(flat: after <= {section['flat_within']:.2f} x before)",
        f"{'family':<11}{'transport':<13}{'cycles':>7}{'RSS MB before':>14}{'after':>8}{'fds before':>11}{'after':>7}"
        f"{'flat':>6}{'cycles/s':>10}",
    ]
    for r in section["rows"]:
        lines.append(
            f"{r['family']:<11}{r['transport']:<13}{r['cycles']:>7}{r['rss_before_mb']:>14.1f}{r['rss_after_mb']:>8.1f}"
            f"{r['fds_before']:>11}{r['fds_after']:>7}{r['flat']!s:>6}{r['cycles_per_s']:>10}"
        )
    for family, why in section["not_run"].items():
        lines.append(f"{family:<11}not run: {why}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(soak_table(soak_section({"babyai": 30}, 0, {})))
    print(Path(__file__).name)
