"""The synchronous baseline: AgentGym-RL's lock-step turn batching, built from the same components.

Invariant: within a batch of ``batch_size`` episodes, every live episode is in the same phase:
all reset together, then each turn all live episodes generate (one batch), and only when the last
generation is back do all of them step their envs, and only when the slowest env step is back does
the next turn start. A batch starts when the previous one has finished. Episodes, envs and the
generator are the async engine's own (``EpisodeRunner``, ``EnvPool``, any ``Generator``); only the
barrier in front of every phase differs (outside the phase's timeout), so the comparison is fair.
"""

from __future__ import annotations

import asyncio

from turnrl.config.episode import EpisodeConfig
from turnrl.engine.generation.base import Generator
from turnrl.engine.rollout.barrier import PhaseBarrier
from turnrl.engine.rollout.episode import EpisodeRunner
from turnrl.engine.rollout.run import EnvPool, fewer_collections
from turnrl.models.chat import ChatFormat
from turnrl.protocol import Task, Trajectory


async def run_lockstep(
    tasks: list[Task], pool: EnvPool, generator: Generator, chat: ChatFormat, config: EpisodeConfig, batch_size: int
) -> list[Trajectory]:
    """One trajectory per task, in task order; ``batch_size`` episodes at a time, in lock-step."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: list[Trajectory] = []
    for start in range(0, len(tasks), batch_size):
        chunk = tasks[start : start + batch_size]
        barrier = PhaseBarrier(len(chunk))

        async def one(task: Task, barrier=barrier) -> Trajectory:
            env = pool.acquire()
            trajectory = await EpisodeRunner(task, env, generator, chat, config, barrier=barrier).run()
            await pool.release(env, healthy=trajectory.end_reason != "env_error")
            return trajectory

        with fewer_collections():
            out.extend(await asyncio.gather(*(one(t) for t in chunk)))
    return out
