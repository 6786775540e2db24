"""The rollout producer of a training run: one rollout per step, started as soon as the buffer admits it.

Invariants:
- step ``s`` rolls out exactly ``sampler.tasks_for_step(s)`` under the schedule's cap for ``s``, and its batch
  reaches the learner through the ``TrajectoryBuffer`` (so the staleness bound holds);
- ``next_batch`` returns the steps in order, each once, with what its rollout did (seconds, the generator's
  figures before and after); a failure of any rollout is raised from ``next_batch``, never waited on forever.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import msgspec

from turnrl.engine.generation.base import Generator, GeneratorStats
from turnrl.engine.rollout.buffer import Ticket, TrajectoryBuffer
from turnrl.engine.rollout.run import run_episodes
from turnrl.engine.training.setup import TrainingRun
from turnrl.protocol import Trajectory


@dataclass
class StepRollout:
    step: int
    turn_cap: int
    trajectories: list[Trajectory]
    seconds: float
    before: GeneratorStats
    after: GeneratorStats


class RolloutProducer:
    def __init__(self, run: TrainingRun, generator: Generator, buffer: TrajectoryBuffer):
        self.run, self.generator, self.buffer = run, generator, buffer
        self._done: dict[int, StepRollout] = {}
        self._task: asyncio.Task | None = None

    def start(self, first_step: int, last_step: int) -> None:
        self._task = asyncio.create_task(self._produce(first_step, last_step))

    async def next_batch(self, step: int) -> StepRollout:
        batch = asyncio.create_task(self.buffer.get())
        done, _ = await asyncio.wait({batch, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if batch not in done and self._task.exception() is not None:
            batch.cancel()
            self._task.result()  # raises the rollout's error
        trajectories = await batch
        record = self._done.pop(step)
        record.trajectories = trajectories  # what the staleness bound kept
        return record

    async def finish(self) -> None:
        if self._task is not None:
            await self._task

    async def _produce(self, first_step: int, last_step: int) -> None:
        running = []
        for step in range(first_step, last_step + 1):
            ticket = await self.buffer.admit()
            running.append(asyncio.create_task(self._rollout(step, ticket)))
        await asyncio.gather(*running)

    async def _rollout(self, step: int, ticket: Ticket) -> None:
        run = self.run
        cap = run.schedule.cap(step)
        config = msgspec.structs.replace(run.config.rollout.episode, turn_cap=cap)
        if run.config.rollout.constrained_at(step):
            config = config.constrained()
        before, start = await run.generator.stats(), time.perf_counter()
        trajectories = await run_episodes(
            run.sampler.tasks_for_step(step), run.pool, self.generator, run.chat, config, run.config.rollout.concurrency
        )
        seconds = time.perf_counter() - start
        self._done[step] = StepRollout(step, cap, trajectories, seconds, before, await run.generator.stats())
        await self.buffer.put(ticket, trajectories)
