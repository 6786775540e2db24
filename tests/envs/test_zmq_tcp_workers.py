"""Env workers over tcp://127.0.0.1, started as separate processes (``turnrl env-worker --bind``): a pool
drives them, one is killed, only its episodes are lost; a worker started again at its address serves again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import pytest

from tests.distributed.roles import CLI, ENV, start_env_worker, stop
from tests.envs.test_zmq_workers import _until, slow_generator
from turnrl.config.envs import EnvWorkerConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.engine.rollout.run import EnvPool, run_episodes
from turnrl.envs.babyai import BabyAIEnv
from turnrl.envs.zmq.pool import EnvWorkerPool
from turnrl.protocol import Task


@pytest.fixture()
def workers():
    started = [start_env_worker(), start_env_worker()]
    yield started
    for proc, _ in started:
        stop(proc)


async def test_remote_workers_over_tcp_lose_only_the_killed_workers_episodes(chat, workers):
    addresses = tuple(address for _, address in workers)
    config = EnvWorkerConfig(workers=0, remote=addresses, heartbeat_s=0.1, heartbeat_timeout_s=2.0)
    tasks, turn_cap = 16, 6
    episode = EpisodeConfig(turn_cap=turn_cap, max_new_tokens=3)
    async with EnvWorkerPool(config) as pool:
        assert pool.pids() == [proc.pid for proc, _ in workers]  # heartbeats name the remote processes
        envs = EnvPool(lambda: pool.env("babyai", level="GoToLocal"))
        generator = slow_generator()
        work = asyncio.create_task(
            run_episodes([Task(env="babyai", item_id=i) for i in range(tasks)], envs, generator, chat, episode)
        )
        await asyncio.wait_for(_until(lambda: pool.workers[0].replies + pool.workers[1].replies >= 40), 30)
        victim, _ = workers[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        trajectories = await asyncio.wait_for(work, 60)
        lost = [t for t in trajectories if t.end_reason == "env_error"]
        kept = [t for t in trajectories if t.end_reason != "env_error"]
        assert len(lost) == tasks // 2, [t.end_reason for t in trajectories]
        assert all(f"env worker 0 at {addresses[0]}" in t.error for t in lost)
        assert all(t.end_reason == "turn_cap" and len(t.turns) == turn_cap for t in kept)
        await asyncio.wait_for(_until(lambda: pool.reconnects >= 1), 30)
        assert pool.restarts == 0  # nothing restarted: the pool did not start that process

        # someone (a supervisor, a person) starts a worker at the same address: the pool's connection finds it
        workers[0] = start_env_worker(addresses[0])
        await asyncio.wait_for(pool.workers[0].ready.wait(), 30)
        assert pool.pids()[0] == workers[0][0].pid
        before = pool.workers[0].replies
        again = await run_episodes(
            [Task(env="babyai", item_id=100 + i) for i in range(tasks)], envs, generator, chat, episode
        )
        assert all(t.end_reason == "turn_cap" for t in again)
        assert pool.workers[0].replies > before  # the lost envs were closed: new ones landed on it
        local = BabyAIEnv("GoToLocal")
        remote = pool.env("babyai", level="GoToLocal")
        assert await remote.reset(100) == local.reset_sync(100)
        await generator.close()
    for proc, _ in workers:
        assert proc.poll() is None  # closing the pool leaves remote workers running: they are not its own


@pytest.mark.parametrize(
    "bad, needle",
    [
        (dict(remote=("ipc:///tmp/x",)), "expected tcp://HOST:PORT"),
        (dict(remote=("tcp://127.0.0.1",)), "expected tcp://HOST:PORT"),
        (dict(remote=("tcp://127.0.0.1:0",)), "expected tcp://HOST:PORT"),
        (dict(remote=("tcp://h:1", "tcp://h:1")), "distinct"),
        (dict(workers=0), "at least one env worker"),
        (dict(workers=-1), "workers must be >= 0"),
    ],
)
def test_bad_remote_worker_config(bad, needle):
    with pytest.raises(ValueError, match=needle):
        EnvWorkerConfig(**bad)


@pytest.mark.parametrize("bind", ["ipc:///tmp/w.sock", "tcp://127.0.0.1", "tcp://127.0.0.1:70000", "tcp://:5"])
def test_env_worker_command_rejects_bad_addresses(bind):
    done = subprocess.run(
        [*CLI, "env-worker", "--bind", bind],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("turnrl: error:") and "tcp://" in done.stderr
