"""Faults during a real rollout: processes killed or stopped under running episodes; does every episode end?

Each scenario is one rollout (real envs in EnvWorker processes, the tiny model in a supervised GenerationService
process) with faults fired at seeded random moments: after a seeded random number of env calls (so a loaded
machine moves the moment in time, not in the rollout), plus a seeded delay. Faults: SIGKILL, SIGSTOP then SIGCONT,
or SIGSTOP left in place (the pool's heartbeat or the generator's health check must notice), of an env worker or
of the generation service; of a SciWorld JVM and of Chromium (a renderer, the browser) where they exist here.

Invariant: a scenario's figures count what ran: episodes started (every task of the rollout), finished (a
trajectory came back with an end reason), per end reason, lost (started and not finished; goal 0), and the
restarts the pool and the generator did. Anything still stopped when the rollout ends is continued.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

from chaos_fuzz import alive

from turnrl.config.envs import EnvWorkerConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.config.generation import ServiceConfig
from turnrl.engine.generation.service_client import ServiceGenerator, ServiceProcess
from turnrl.engine.rollout.run import EnvPool, RolloutStats, run_episodes
from turnrl.envs.base import Env
from turnrl.envs.zmq.pool import EnvWorkerPool
from turnrl.errors import END_REASONS
from turnrl.models.chat import ChatFormat
from turnrl.models.loading import load_policy
from turnrl.protocol import EnvResult, Task

ROLLOUT_GUARD_S = 900.0  # a hang guard: a rollout past it counts its unfinished episodes as lost


class Progress:
    """Counts env calls across a rollout and wakes waiters at a count."""

    def __init__(self) -> None:
        self.calls = 0
        self._waiters: list[tuple[int, asyncio.Future]] = []

    def tick(self) -> None:
        self.calls += 1
        for n, future in self._waiters:
            if self.calls >= n and not future.done():
                future.set_result(None)

    async def reached(self, n: int) -> None:
        if self.calls >= n:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((n, future))
        await future


class CountingEnv(Env):
    """An env that counts its calls in ``progress`` (the rest is the wrapped env's)."""

    def __init__(self, inner: Env, progress: Progress):
        self.inner, self.progress = inner, progress
        self.family = inner.family

    @property
    def system_prompt(self) -> str:
        return self.inner.system_prompt

    async def reset(self, item_id: int) -> str:
        self.progress.tick()
        return await self.inner.reset(item_id)

    async def step(self, action_text: str) -> EnvResult:
        self.progress.tick()
        return await self.inner.step(action_text)

    async def valid_actions(self):
        return await self.inner.valid_actions()

    async def close(self) -> None:
        await self.inner.close()


# ---- finding the processes to hurt -------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def jvm_pids(pool: EnvWorkerPool) -> list[int]:
    return [p for w in pool.pids() for p in _descendants(w) if "java" in _cmdline(p).split(" ", 1)[0]]


def chromium_pids(pool: EnvWorkerPool, renderer: bool) -> list[int]:
    pids = [p for w in pool.pids() for p in _descendants(w) if "chrom" in _cmdline(p).split(" ", 1)[0]]
    if renderer:
        return [p for p in pids if "--type=renderer" in _cmdline(p)]
    return [p for p in pids if "--type=" not in _cmdline(p)]  # the browser process itself


def sciworld_available() -> str | None:
    """None if a SciWorld JVM can run here, else why not."""
    if shutil.which("java") is None:
        return "no java on this machine"
    try:
        import scienceworld  # noqa: F401
    except ImportError:
        return "the scienceworld package is not installed"
    return None


def chromium_available() -> str | None:
    from turnrl.envs.web.browser import CHROMIUM

    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM}"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


# ---- scenarios ---------------------------------------------------------------------------------------------------
class Scenario:
    def __init__(self, name: str, family: str, target: str, action: str, options: dict | None = None):
        self.name, self.family, self.target, self.action = name, family, target, action
        self.options = options or {}


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [
            Scenario("env worker SIGKILL", "babyai", "env_worker", "kill"),
            Scenario("generation service SIGKILL", "babyai", "service", "kill"),
        ]
    return [
        Scenario("no fault", "babyai", "none", "none"),
        Scenario("env worker SIGKILL", "babyai", "env_worker", "kill"),
        Scenario("env worker SIGSTOP, SIGCONT", "babyai", "env_worker", "stop_cont"),
        Scenario("env worker SIGSTOP left (heartbeat)", "babyai", "env_worker", "stop"),
        Scenario("generation service SIGKILL", "babyai", "service", "kill"),
        Scenario("generation service SIGSTOP, SIGCONT", "babyai", "service", "stop_cont"),
        Scenario("generation service SIGSTOP left (health)", "babyai", "service", "stop"),
        Scenario("SciWorld JVM SIGKILL", "sciworld", "jvm", "kill"),
        Scenario("SciWorld JVM SIGSTOP left (env timeout)", "sciworld", "jvm", "stop"),
        Scenario("Chromium renderer SIGKILL", "web", "renderer", "kill"),
        Scenario("Chromium browser SIGKILL", "web", "browser", "kill"),
    ]


async def _fire(scenario: Scenario, rng: random.Random, pool, service: ServiceProcess, stopped: list[int]) -> str:
    """Hurt one process of the scenario's target (waiting up to 60 s for one to exist); returns what was done."""

    def targets() -> list[int]:
        if scenario.target == "env_worker":
            return pool.pids()
        if scenario.target == "service":
            return [service.process.pid] if service.process is not None else []
        if scenario.target == "jvm":
            return jvm_pids(pool)
        return chromium_pids(pool, renderer=scenario.target == "renderer")

    deadline = time.monotonic() + 60.0  # a live one not already stopped (a killed service is being restarted)
    while not (pids := [p for p in targets() if alive(p) and p not in stopped]):
        if time.monotonic() > deadline:
            return "no such process within 60 s"
        await asyncio.sleep(0.1)
    pid = rng.choice(sorted(pids))
    try:
        if scenario.action == "kill":
            os.kill(pid, signal.SIGKILL)
            return f"SIGKILL {pid}"
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        if scenario.action == "stop_cont":
            pause = rng.uniform(0.5, 1.5)
            await asyncio.sleep(pause)
            os.kill(pid, signal.SIGCONT)
            return f"SIGSTOP {pid}, SIGCONT after {pause:.2f} s"
        return f"SIGSTOP {pid} (left)"
    except ProcessLookupError:
        return f"{pid} was already gone"


async def run_scenario(
    scenario: Scenario, generator: ServiceGenerator, chat: ChatFormat, seed: int, quick: bool
) -> dict:
    rng = random.Random(f"{seed}-{scenario.name}")
    service = generator.owned_process
    heavy = scenario.family in ("sciworld", "web")
    episodes = (4 if heavy else 8) if quick else (4 if heavy else 16)
    turn_cap = 3 if heavy else 4
    faults = 0 if scenario.target == "none" else (1 if quick or heavy else 2)
    pool = await EnvWorkerPool(
        EnvWorkerConfig(workers=2, heartbeat_s=0.2, heartbeat_timeout_s=3.0, start_timeout_s=120.0)
    ).start()
    progress = Progress()
    envs = EnvPool(lambda: CountingEnv(pool.env(scenario.family, **scenario.options), progress))
    config = EpisodeConfig(
        turn_cap=turn_cap, max_new_tokens=16, env_timeout_s=30.0 if scenario.family == "sciworld" else 20.0
    )
    items = 38 if scenario.family == "web" else 10**4
    tasks = [Task(env=scenario.family, item_id=i % items) for i in range(episodes)]
    # heavy envs: all episodes run at once and end together, so their faults come in the first third
    share = 0.3 if heavy else 0.5  # early enough that the rollout is still running when they fire
    moments = sorted(rng.randint(1, max(1, int(share * episodes * (turn_cap + 1)))) for _ in range(faults))
    stopped: list[int] = []
    done: list[str] = []
    stats = RolloutStats()
    service_restarts = len(generator.restarts)

    async def chaos() -> None:
        for at in moments:
            await progress.reached(at)
            await asyncio.sleep(0.0 if heavy else rng.uniform(0.0, 0.05))
            done.append(f"after {progress.calls} env calls: " + await _fire(scenario, rng, pool, service, stopped))

    start = time.perf_counter()
    injector = asyncio.create_task(chaos())
    trajectories, failure = [], None
    try:
        async with asyncio.timeout(ROLLOUT_GUARD_S):
            trajectories = await run_episodes(tasks, envs, generator, chat, config, concurrency=16, stats=stats)
    except Exception as exc:  # counted: every episode of the rollout is then lost
        failure = repr(exc)
    finally:
        injector.cancel()
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        wall = time.perf_counter() - start
        await envs.close()
        await pool.close()
    reasons = Counter(t.end_reason for t in trajectories if t.end_reason in END_REASONS)
    finished = sum(reasons.values())
    return {
        "scenario": scenario.name,
        "family": scenario.family,
        "episodes_started": stats.finished + stats.in_flight if failure is None else episodes,
        "episodes_finished": finished,
        "lost": episodes - finished,
        "end_reasons": dict(sorted(reasons.items())),
        "faults": done,
        "faults_fired": sum(1 for d in done if "SIG" in d and "gone" not in d),
        "env_worker_restarts": pool.restarts,
        "service_restarts": generator.restarts[service_restarts:],
        "failure": failure,
        "wall_s": round(wall, 1),
    }


async def _run_all(chosen: list[Scenario], model_dir: Path, workdir: Path, seed: int, quick: bool) -> list[dict]:
    _, tokenizer = load_policy(model_dir)
    chat = ChatFormat(tokenizer)
    config = ServiceConfig(
        model_path=str(model_dir), address=f"ipc://{workdir}/faults-gen.sock", torch_threads=1, max_running=64
    )
    service = await asyncio.to_thread(ServiceProcess(config).start, 180.0)
    generator = ServiceGenerator(
        config.address, owned_process=service, supervise=True, health_interval_s=0.2, hang_timeout_s=5.0
    )
    rows = []
    try:
        for scenario in chosen:
            print(f"[chaos] faults: {scenario.name}", flush=True)
            rows.append(await run_scenario(scenario, generator, chat, seed, quick))
    finally:
        await generator.close()
    return rows


def faults_section(model_dir: Path, seed: int, quick: bool) -> dict:
    chosen, skipped = [], {}
    unavailable = {"sciworld": sciworld_available(), "web": chromium_available()}
    for scenario in scenarios(quick):
        if unavailable.get(scenario.family):
            skipped[scenario.name] = unavailable[scenario.family]
        else:
            chosen.append(scenario)
    if quick:
        skipped["the other scenarios"] = "not run with --quick (SIGSTOP, a SciWorld JVM, Chromium: the full run)"
    with tempfile.TemporaryDirectory(prefix="turnrl-chaos-faults-") as tmp:
        rows = asyncio.run(_run_all(chosen, model_dir, Path(tmp), seed, quick))
    return {"rows": rows, "not_run": skipped}


def faults_table(section: dict) -> str:
    lines = [
        "faults during a rollout (env workers and the supervised generation service as processes; BabyAI unless "
        "named); lost = started - finished (goal 0)",
        f"{'scenario':<44}{'fired':>6}{'started':>8}{'finished':>9}{'lost':>5}{'restarts w/s':>13}  end reasons",
    ]
    for r in section["rows"]:
        reasons = ", ".join(f"{k} {v}" for k, v in r["end_reasons"].items())
        restarts = f"{r['env_worker_restarts']}/{len(r['service_restarts'])}"
        lines.append(
            f"{r['scenario']:<44}{r['faults_fired']:>6}{r['episodes_started']:>8}{r['episodes_finished']:>9}"
            f"{r['lost']:>5}{restarts:>13}  {reasons}"
        )
    for name, why in section["not_run"].items():
        lines.append(f"{name:<44}not run: {why}")
    return "\n".join(lines)
