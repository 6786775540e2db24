"""The rollout engine at scale: the fixed workload, the continuous-batching latency model, async vs
lock-step on the same components, per-episode deadlines, thousands of episodes at once."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import msgspec
import numpy as np
import pytest

from bench.latency_model import LatencyModelGenerator, SyntheticEnv, Workload, WorkloadConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.engine.generation.base import Generator
from turnrl.engine.rollout.barrier import PhaseBarrier
from turnrl.engine.rollout.episode import EpisodeRunner
from turnrl.engine.rollout.lockstep import run_lockstep
from turnrl.engine.rollout.run import EnvPool, RolloutStats, run_episodes
from turnrl.errors import GenerationError
from turnrl.protocol import GenerateRequest, Task


def test_workload_is_a_pure_function_of_its_seed_and_follows_its_distributions():
    big = WorkloadConfig(episodes=20_000)
    a, b, other = Workload(big), Workload(big), Workload(WorkloadConfig(episodes=20_000, seed=1))
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.latency_s, b.latency_s)
    assert not np.array_equal(a.tokens, other.tokens)
    assert set(np.unique(a.turns)) == set(range(1, 9)) and abs(a.turns.mean() - 4.5) < 0.05
    assert abs(np.median(a.tokens) - 64) < 3 and a.tokens.max() == 512 and a.tokens.min() >= 1
    assert 0.007 < (a.tokens >= 512).mean() < 0.013  # the p99 sits at the cap
    assert abs(np.median(a.latency_s) - 0.020) < 0.001 and a.latency_s.max() <= 10.0
    assert abs(np.quantile(a.latency_s, 0.99) - 2.0) < 0.25
    # the smaller default workload is the first episodes' plan drawn the same way
    small = Workload(WorkloadConfig(episodes=2048))
    assert small.total_steps == int(small.turns.sum()) and small.total_tokens > 0


def _reference_steps(lengths_by_arrival: list[int], max_running: int) -> tuple[int, list[int]]:
    """All requests present at step 0; FIFO admission up to max_running; -> (steps, running per step)."""
    waiting, running, step, per_step = list(lengths_by_arrival), [], 0, []
    while waiting or running:
        while waiting and len(running) < max_running:
            heapq.heappush(running, step + waiting.pop(0))
        per_step.append(len(running))
        step += 1
        while running and running[0] <= step:
            heapq.heappop(running)
    return step, per_step


@pytest.mark.parametrize("max_running", [1, 3, 8])
async def test_latency_model_batches_continuously_like_the_reference(max_running):
    rng = np.random.default_rng(max_running)
    lengths = [int(x) for x in rng.integers(1, 12, size=7)]
    config = WorkloadConfig(episodes=len(lengths), max_running=max_running, step_base_s=0.001, step_per_seq_s=0.0002)
    workload = Workload(config)
    generator = LatencyModelGenerator(workload, tokens_of=lambda r: lengths[int(r.request_id)])
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    results = await asyncio.gather(
        *(generator.generate(GenerateRequest(request_id=str(i), input_ids=[1])) for i in range(len(lengths)))
    )
    wall = loop.time() - t0
    await generator.close()
    steps, per_step = _reference_steps(lengths, max_running)
    assert [len(r.output_ids) for r in results] == lengths
    assert generator.steps == steps and generator.running_sum == sum(per_step)
    expected_busy = sum(workload.step_cost_s(n) for n in per_step)
    assert generator.busy_s == pytest.approx(expected_busy)
    assert wall >= expected_busy * 0.95  # time really passes as the model says
    assert generator.max_running_seen == min(max_running, len(lengths))


class _PhaseProbe(Generator):
    """Counts how often a generation starts while an env step of another episode is in flight."""

    def __init__(self, inner: Generator, envs: list):
        self.inner, self.envs, self.overlaps, self.calls = inner, envs, 0, 0

    @property
    def weight_version(self):
        return self.inner.weight_version

    async def generate(self, request):
        self.calls += 1
        self.overlaps += any(env.stepping for env in self.envs)
        return await self.inner.generate(request)


class _ProbedEnv(SyntheticEnv):
    stepping = False

    async def step(self, action_text):
        self.stepping = True
        try:
            return await super().step(action_text)
        finally:
            self.stepping = False


async def _both_modes(chat, episodes=24, slots=8):
    workload = Workload(WorkloadConfig(episodes=episodes, time_scale=0.01, env_median_s=0.2, env_p99_s=1.0))
    config = EpisodeConfig(turn_cap=8, max_new_tokens=512, max_total_tokens=8192)
    out = {}
    for mode in ("async", "sync"):
        envs = []
        pool = EnvPool(lambda envs=envs: envs.append(_ProbedEnv(workload)) or envs[-1])
        inner = LatencyModelGenerator(workload)
        probe = _PhaseProbe(inner, envs)
        tasks = [Task(env="synthetic", item_id=i, group=i) for i in range(episodes)]
        run = run_episodes if mode == "async" else run_lockstep
        trajectories = await run(tasks, pool, probe, chat, config, slots)
        await inner.close()
        out[mode] = trajectories, probe, inner
    return workload, out


async def test_lockstep_and_async_do_the_same_work_but_only_async_overlaps(chat):
    workload, out = await _both_modes(chat)
    (a_traj, a_probe, a_gen), (s_traj, s_probe, s_gen) = out["async"], out["sync"]
    for mode_traj in (a_traj, s_traj):
        assert [len(t.turns) for t in mode_traj] == [int(n) for n in workload.turns]
        assert all(t.end_reason == "done" for t in mode_traj)
    assert [t.token_ids for t in a_traj] == [t.token_ids for t in s_traj]
    assert a_gen.tokens == s_gen.tokens == workload.total_tokens
    assert s_probe.overlaps == 0  # lock-step: nobody generates while an env of its batch steps
    assert a_probe.overlaps > 0


async def test_phase_barrier_releases_when_every_live_party_arrived():
    barrier = PhaseBarrier(3)
    order = []

    async def party(name, leave_early):
        if leave_early:
            # gather starts a, b, c in order and a, b do not yield before arrive(): both wait at the barrier now
            barrier.leave()
            order.append(f"{name} left")
            return
        await barrier.arrive()
        order.append(f"{name} passed")

    await asyncio.gather(party("a", False), party("b", False), party("c", True))
    assert order == ["c left", "a passed", "b passed"]


class _HangingEnv(SyntheticEnv):
    async def step(self, action_text):
        if self._item == 0:
            await asyncio.sleep(3600)
        return await super().step(action_text)


async def test_episode_deadline_ends_only_that_episode(chat):
    workload = Workload(WorkloadConfig(episodes=4, step_base_s=0.0, step_per_seq_s=0.0))
    generator = LatencyModelGenerator(workload, zero_cost=True)
    config = EpisodeConfig(turn_cap=8, max_new_tokens=512, max_total_tokens=8192, env_timeout_s=None)
    # Only the hung episode has a deadline: the others' outcome cannot depend on how loaded the machine is.
    deadline = msgspec.structs.replace(config, episode_timeout_s=0.2)
    runners = [
        EpisodeRunner(
            Task(env="synthetic", item_id=i),
            _HangingEnv(workload, zero_latency=True),
            generator,
            chat,
            deadline if i == 0 else config,
        )
        for i in range(4)
    ]
    hung, *fine = await asyncio.gather(*(r.run() for r in runners))
    assert hung.end_reason == "aborted" and "timed out" in hung.error
    assert len(hung.token_ids) == hung.prompt_len and not hung.turns  # no half turn is kept
    assert all(t.end_reason == "done" and len(t.turns) == workload.turns[t.task.item_id] for t in fine)


async def test_an_env_factory_that_raises_ends_only_that_episode(chat):
    workload = Workload(WorkloadConfig(episodes=6, step_base_s=0.0, step_per_seq_s=0.0))
    generator = LatencyModelGenerator(workload, zero_cost=True)
    acquisitions, failing = itertools.count(), {1, 4}

    def factory():
        n = next(acquisitions)
        if n in failing:
            raise RuntimeError(f"no env for acquisition {n}")
        return _YieldingEnv(workload, zero_latency=True)

    pool, stats = EnvPool(factory), RolloutStats()
    config = EpisodeConfig(turn_cap=8, max_new_tokens=512, max_total_tokens=8192)
    tasks = [Task(env="synthetic", item_id=i) for i in range(6)]
    # every reset yields once, so the six episodes acquire in task order before any env is released
    trajectories = await run_episodes(tasks, pool, generator, chat, config, concurrency=6, stats=stats)
    await generator.close()
    assert [t.task for t in trajectories] == tasks
    failed = [t for t in trajectories if t.end_reason == "env_error"]
    assert [t.task.item_id for t in failed] == [1, 4]
    expected = [f"env creation failed: RuntimeError('no env for acquisition {n}')" for n in (1, 4)]
    assert [t.error for t in failed] == expected
    for t in failed:
        assert not t.token_ids and not t.turns and t.turn_cap == 8
    for t in trajectories:
        if t not in failed:
            assert t.end_reason == "done" and len(t.turns) == workload.turns[t.task.item_id]
    assert stats.finished == 6 and stats.in_flight == 0
    assert next(acquisitions) == pool.created == 6 and len(pool._idle) == 4  # the healthy envs went back


class _YieldingEnv(SyntheticEnv):
    async def reset(self, item_id):
        await asyncio.sleep(0)
        return await super().reset(item_id)


class _FailingGenerator(Generator):
    """Raises ``GenerationError`` on the given (item id, turn) requests; passes every other one on."""

    def __init__(self, inner: Generator, fail_on: set[tuple[int, int]]):
        self.inner, self.fail_on, self.failed = inner, fail_on, []

    @property
    def weight_version(self):
        return self.inner.weight_version

    async def generate(self, request):
        item = int(request.session_id.split("-")[1])  # session ids read "<env>-<item>-<group>-<n>"
        turn = int(request.request_id.rpartition("-")[2])  # request ids "<session>-<turn>"
        if (item, turn) in self.fail_on:
            self.failed.append((item, turn))
            raise GenerationError(f"the model server fell over on item {item}")
        return await self.inner.generate(request)


async def test_a_generation_error_mid_episode_ends_only_that_episode_gen_error(chat):
    workload = Workload(WorkloadConfig(episodes=6, step_base_s=0.0, step_per_seq_s=0.0))
    turns = [int(n) for n in workload.turns]
    # fail each chosen episode on its second-to-last turn: it had whole turns before, and would have had more
    fail_on = {(i, turns[i] - 2) for i in (1, 4) if turns[i] >= 2}
    assert fail_on, "the workload has no episode long enough: pick another seed"
    inner = LatencyModelGenerator(workload, zero_cost=True)
    generator = _FailingGenerator(inner, fail_on)
    config = EpisodeConfig(turn_cap=8, max_new_tokens=512, max_total_tokens=8192)
    tasks = [Task(env="synthetic", item_id=i) for i in range(6)]
    pool = EnvPool(lambda: SyntheticEnv(workload, zero_latency=True))
    trajectories = await run_episodes(tasks, pool, generator, chat, config, concurrency=3)
    await inner.close()
    assert sorted(generator.failed) == sorted(fail_on)
    failed_items = {item for item, _ in fail_on}
    for t in trajectories:
        if t.task.item_id in failed_items:
            turn = next(turn for item, turn in fail_on if item == t.task.item_id)
            assert t.end_reason == "gen_error" and f"the model server fell over on item {t.task.item_id}" in t.error
            assert len(t.turns) == turn and not t.success  # the turns before the failure are kept, whole
            assert sum(t.loss_mask) == sum(turn.action_end - turn.action_start for turn in t.turns)
        else:
            assert t.end_reason == "done" and len(t.turns) == turns[t.task.item_id]


async def test_thousands_of_episodes_at_once(chat):
    workload = Workload(WorkloadConfig(episodes=2048, time_scale=0.01))
    generator = LatencyModelGenerator(workload, tokens_of=lambda request: 2)  # short turns: a quick test
    stats = RolloutStats()
    config = EpisodeConfig(turn_cap=8, max_new_tokens=512, max_total_tokens=8192)
    trajectories = await run_episodes(
        [Task(env="synthetic", item_id=i) for i in range(2048)],
        EnvPool(lambda: SyntheticEnv(workload, zero_latency=True)),
        generator,
        chat,
        config,
        concurrency=2048,
        stats=stats,
    )
    await generator.close()
    assert stats.max_in_flight == 2048 and stats.in_flight == 0 and stats.finished == 2048
    assert sum(len(t.turns) for t in trajectories) == workload.total_steps
    assert generator.max_running_seen == workload.config.max_running  # the generator's cap held


@pytest.mark.parametrize("bad", [dict(time_scale=0), dict(episodes=0), dict(max_running=0), dict(tokens_median=600.0)])
def test_bad_workload_config(bad):
    with pytest.raises(ValueError):
        WorkloadConfig(**bad)


async def test_bad_rollout_arguments(chat):
    workload = Workload(WorkloadConfig(episodes=2))
    with pytest.raises(ValueError, match="batch_size"):
        await run_lockstep(
            [],
            EnvPool(lambda: SyntheticEnv(workload)),
            LatencyModelGenerator(workload),
            chat,
            EpisodeConfig(),
            batch_size=0,
        )
    with pytest.raises(ValueError, match="episode_timeout_s"):
        EpisodeConfig(episode_timeout_s=0)
    with pytest.raises(ValueError, match="item_id"):
        SyntheticEnv(workload).reset_sync(2)


async def test_latency_model_stamps_each_token_with_the_version_that_sampled_it():
    """A version bump between two decode steps splits a running sequence's tokens; a hold delays the rest."""
    n = 12
    workload = Workload(WorkloadConfig(episodes=1, step_base_s=0.002, step_per_seq_s=0.0))
    generator = LatencyModelGenerator(workload, tokens_of=lambda r: n)
    loop = asyncio.get_running_loop()
    request = asyncio.create_task(generator.generate(GenerateRequest(request_id="0", input_ids=[1])))
    while generator.steps < 3:  # a few tokens sampled under version 0
        await asyncio.sleep(0)
    old, hold_s = generator.steps + 1, 0.05  # the step in progress finishes under the old weights
    generator.hold(hold_s)
    held_from = loop.time()
    generator.bump_version()
    result = await request
    done = loop.time()
    await generator.close()
    assert result.versions == [0] * old + [1] * (n - old)
    remaining = (n - old) * workload.step_cost_s(1)
    assert done - held_from >= hold_s + remaining * 0.95  # the held time really passed before the rest
