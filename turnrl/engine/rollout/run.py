"""Run many episodes at once as coroutines and collect their trajectories.

Invariant: one trajectory per task, in task order, whatever happened in the
episode (a failure is a recorded end reason, never an exception out of here: an env
factory that raises ends that episode ``env_error`` with no tokens);
at most ``concurrency`` episodes hold an environment at a time, and an env is
reused only after its episode finished (an env that failed is closed, not reused); a new
episode starts as soon as a slot frees. ``RolloutStats`` counts what ran (episodes in flight,
their peak), so a benchmark can check the concurrency it asked for. While episodes run, the
cyclic garbage collector runs less often (thousands of live episodes make each of its passes
long, and they create little cyclic garbage); its thresholds are restored when the last
concurrent rollout ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable

from turnrl.config.episode import EpisodeConfig
from turnrl.engine.generation.base import Generator
from turnrl.engine.rollout.episode import EpisodeRunner
from turnrl.envs.base import Env
from turnrl.models.chat import ChatFormat
from turnrl.protocol import Task, Trajectory


class EnvPool:
    """Idle env instances of one family, created on demand."""

    def __init__(self, factory: Callable[[], Env]):
        self.factory = factory
        self._idle: list[Env] = []
        self.created = 0

    def acquire(self) -> Env:
        if self._idle:
            return self._idle.pop()
        self.created += 1
        return self.factory()

    async def release(self, env: Env, healthy: bool) -> None:
        if healthy:
            self._idle.append(env)
        else:
            with contextlib.suppress(Exception):
                await env.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for env in idle:
            await env.close()


_ROLLOUT_GC_THRESHOLD = 100_000
_active_rollouts = 0
_saved_threshold: tuple[int, ...] = ()


@contextlib.contextmanager
def fewer_collections():
    """Raise the GC's first threshold while any rollout runs (nesting- and concurrency-safe)."""
    global _active_rollouts, _saved_threshold
    if _active_rollouts == 0:
        _saved_threshold = gc.get_threshold()
        gc.set_threshold(max(_saved_threshold[0], _ROLLOUT_GC_THRESHOLD), *_saved_threshold[1:])
    _active_rollouts += 1
    try:
        yield
    finally:
        _active_rollouts -= 1
        if _active_rollouts == 0:
            gc.set_threshold(*_saved_threshold)


class RolloutStats:
    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.finished = 0

    def started(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def ended(self) -> None:
        self.in_flight -= 1
        self.finished += 1


def env_failure(task: Task, config: EpisodeConfig, error: str) -> Trajectory:
    """The trajectory of an episode that never got an env: no tokens, ``env_error``."""
    return Trajectory(
        task=task,
        token_ids=[],
        loss_mask=[],
        logprobs=[],
        versions=[],
        prompt_len=0,
        turn_cap=config.turn_cap,
        end_reason="env_error",
        error=error,
    )


async def run_episodes(
    tasks: list[Task],
    pool: EnvPool,
    generator: Generator,
    chat: ChatFormat,
    config: EpisodeConfig,
    concurrency: int = 1024,
    stats: RolloutStats | None = None,
) -> list[Trajectory]:
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    slots = asyncio.Semaphore(concurrency)
    stats = stats or RolloutStats()

    async def one(task: Task) -> Trajectory:
        async with slots:
            stats.started()
            try:
                try:
                    env = pool.acquire()
                except Exception as exc:  # the env factory failed: this episode ends, the batch goes on
                    return env_failure(task, config, f"env creation failed: {exc!r}")
                trajectory = await EpisodeRunner(task, env, generator, chat, config).run()
            finally:
                stats.ended()
            await pool.release(env, healthy=trajectory.end_reason != "env_error")
            return trajectory

    with fewer_collections():
        return list(await asyncio.gather(*(one(t) for t in tasks)))
