"""TrajectoryBuffer: the staleness bound eta holds at admission and at consumption, tightly."""

from __future__ import annotations

import asyncio
import random

import pytest

from bench.latency_model import LatencyModelGenerator, SyntheticEnv, Workload, WorkloadConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.engine.generation.pausable import PausableGenerator
from turnrl.engine.rollout.buffer import Ticket, TrajectoryBuffer, staleness
from turnrl.engine.rollout.run import EnvPool, run_episodes
from turnrl.protocol import GenerateRequest, Task, Trajectory


def traj(versions: list[int], mask: list[int], item: int = 0) -> Trajectory:
    return Trajectory(
        task=Task(env="t", item_id=item),
        token_ids=[1] * len(mask),
        loss_mask=mask,
        logprobs=[0.0] * len(mask),
        versions=versions,
        prompt_len=0,
    )


async def _pending(coro, turns: int = 10):
    """Start ``coro`` and give the loop ``turns`` passes (no clock): it runs until it blocks, or finishes."""
    task = asyncio.ensure_future(coro)
    await _yield(turns)
    return task


async def _yield(turns: int) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def test_eta_zero_is_synchronous():
    buffer = TrajectoryBuffer(0)
    first = await buffer.admit()
    pending = await _pending(buffer.admit())
    assert not pending.done()  # the next batch waits for the update
    await buffer.put(first, [traj([-1, 0], [0, 1])])
    assert len(await buffer.get()) == 1
    assert not pending.done()  # consumed, but not yet trained on
    await buffer.advance()
    second = await asyncio.wait_for(pending, 1)
    assert first == Ticket(0, 0) and second == Ticket(1, 1)


@pytest.mark.parametrize("eta", [0, 1, 2, 3])
async def test_admission_bound_holds_and_is_reached_under_random_timing(eta):
    rng = random.Random(eta)
    batches = 12
    buffer = TrajectoryBuffer(eta)
    admitted_at: dict[int, int] = {}
    lags = []

    async def rollout(ticket):
        await _yield(rng.randrange(8))  # a random interleaving, the same on every machine
        await buffer.put(ticket, [traj([ticket.version], [1], item=ticket.index)])

    async def produce():
        running = []
        for _ in range(batches):
            ticket = await buffer.admit()
            admitted_at[ticket.index] = ticket.version
            running.append(asyncio.create_task(rollout(ticket)))
        await asyncio.gather(*running)

    producer = asyncio.create_task(produce())
    for index in range(batches):
        batch = await buffer.get()
        assert [t.task.item_id for t in batch] == [index]  # admission order
        lags.append(buffer.version - admitted_at[index])
        await _yield(rng.randrange(8))  # the update
        await buffer.advance()
    await producer
    assert max(lags) <= eta and buffer.stale_dropped == 0
    assert max(lags) == eta  # a fast producer runs exactly eta versions ahead, no less


async def test_consumption_drops_tokens_older_than_the_bound():
    buffer = TrajectoryBuffer(1)
    for _ in range(3):
        await buffer.advance()  # learner at version 3
    ticket = await buffer.admit()
    batch = [
        traj([-1, 3, 3], [0, 1, 1], 0),
        traj([-1, 2, 3], [0, 1, 1], 1),
        traj([-1, 1, 3], [0, 1, 1], 2),
        traj([-1, -1], [0, 0], 3),
    ]
    await buffer.put(ticket, batch)
    kept = await buffer.get()
    assert [t.task.item_id for t in kept] == [0, 1, 3] and buffer.stale_dropped == 1
    assert staleness(traj([-1, 1, 3], [0, 1, 1]), 3) == 2 and staleness(traj([5], [0]), 9) == 0


async def test_bad_input():
    with pytest.raises(ValueError, match="eta"):
        TrajectoryBuffer(-1)
    buffer = TrajectoryBuffer(0)
    with pytest.raises(ValueError, match="ticket"):
        await buffer.put(Ticket(0, 0), [])  # never admitted
    ticket = await buffer.admit()
    await buffer.put(ticket, [])
    with pytest.raises(ValueError, match="ticket"):
        await buffer.put(ticket, [])  # twice
    assert await buffer.get() == []


@pytest.mark.parametrize("eta", [0, 1])
async def test_real_rollouts_across_updates_respect_the_bound(chat, eta):
    """Episodes keep running across weight updates (per-token versions); none trains beyond eta."""
    workload = Workload(WorkloadConfig(episodes=64, time_scale=0.02, env_median_s=0.01, env_p99_s=0.05))
    inner = LatencyModelGenerator(workload)
    generator = PausableGenerator(inner)
    config = EpisodeConfig(turn_cap=8, max_new_tokens=512, max_total_tokens=8192)
    steps, per_step = 4, 16
    buffer = TrajectoryBuffer(eta)
    pool = EnvPool(lambda: SyntheticEnv(workload))

    async def rollout(step, ticket):
        tasks = [Task(env="synthetic", item_id=step * per_step + i) for i in range(per_step)]
        await buffer.put(ticket, await run_episodes(tasks, pool, generator, chat, config))

    async def produce():
        running = []
        for step in range(steps):
            running.append(asyncio.create_task(rollout(step, await buffer.admit())))
        await asyncio.gather(*running)

    producer = asyncio.create_task(produce())
    seen = []
    for _ in range(steps):
        batch = await buffer.get()
        seen.append([staleness(t, buffer.version) for t in batch])
        await generator.pause()
        inner.bump_version()
        generator.resume()
        await buffer.advance()
    await producer
    await inner.close()
    assert buffer.stale_dropped == 0 and all(len(batch) == per_step for batch in seen)
    flat = [s for batch in seen for s in batch]
    assert max(flat) <= eta
    if eta:
        assert max(flat) == eta  # the next batch really was generated while the learner trained


async def test_pause_waits_for_requests_in_flight_and_holds_new_ones(chat):
    workload = Workload(WorkloadConfig(episodes=4, step_base_s=0.002, step_per_seq_s=0.0))
    inner = LatencyModelGenerator(workload, tokens_of=lambda r: 10)
    generator = PausableGenerator(inner)
    request = GenerateRequest(request_id="s-0-0-0-0", input_ids=[1], session_id="s-0-0-0")
    first = asyncio.create_task(generator.generate(request))
    await asyncio.sleep(0)
    await generator.pause()
    assert first.done()  # pause returned only once the call in flight was answered
    held = await _pending(generator.generate(request))
    assert not held.done()
    generator.resume()
    result = await asyncio.wait_for(held, 1)
    await inner.close()
    assert len(result.output_ids) == 10
