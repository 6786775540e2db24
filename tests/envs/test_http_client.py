"""The remote env backend against a real ``turnrl serve-env``, and the pool's concurrency and cap rules."""

from __future__ import annotations

import asyncio
import threading

import pytest

from turnrl.envs import TaskSplits, make_env
from turnrl.envs.babyai import BabyAIEnv
from turnrl.envs.base import BlockingEnv
from turnrl.envs.http.client import HttpEnv, register_remote, strip_marker
from turnrl.envs.http.env_table import EnvTable
from turnrl.envs.http.launch import running_server
from turnrl.errors import EnvTableFull, HttpEnvError, UnknownEnv
from turnrl.protocol import EnvResult


@pytest.fixture(scope="module")
def babyai_url():
    with running_server("babyai", "--max-envs", "4") as (base, _):
        yield base


async def test_remote_env_plays_like_the_local_one(babyai_url):
    remote, local = HttpEnv(babyai_url, family="babyai"), BabyAIEnv(level="all")
    for item in (3, 44, 121):
        assert await remote.reset(item) == local.reset_sync(item)
        assert await remote.valid_actions() == local.valid_actions_sync()
        for reply in ("Thought: turn.\nAction: turn left", "Action: move forward", "Action: jump"):
            mine, theirs = local.step_sync(reply), await remote.step(reply)
            assert theirs.observation == mine.observation and theirs.reward == mine.reward
            assert theirs.done == mine.done and theirs.info["valid"] == mine.info["valid"]
            if mine.done:
                break
    await remote.close()
    await remote.close()
    with pytest.raises(RuntimeError):
        await remote.step("Action: turn left")


async def test_remote_errors_and_bad_settings(babyai_url):
    remote = HttpEnv(babyai_url)
    await remote.reset(0)
    other = HttpEnv(babyai_url)
    other.env_id = remote.env_id + 1000  # an id the server never gave out
    with pytest.raises(HttpEnvError, match="404"):
        await other.step("Action: turn left")
    with pytest.raises(HttpEnvError, match="400"):
        await remote.reset(-1)
    await remote.close()
    await other.close()
    with pytest.raises(ValueError, match="base_url"):
        HttpEnv("localhost:1")
    with pytest.raises(ValueError, match="protocol"):
        HttpEnv(babyai_url, protocol="gopher")


async def test_registered_remote_family(babyai_url):
    register_remote("remote-babyai-test", babyai_url, TaskSplits(train=range(40, 400), test=range(0, 40)), 20)
    env = make_env("remote-babyai-test")
    assert isinstance(env, HttpEnv) and env.family == "remote-babyai-test"
    assert await env.reset(7) == BabyAIEnv(level="all").reset_sync(7)
    await env.close()


def test_strip_marker():
    assert strip_marker("Thought: x\nAction: Go To red ball 1\nmore") == "Go To red ball 1"
    assert strip_marker("turn left") == "turn left"


class _GatedEnv(BlockingEnv):
    """A test env whose step waits on an event, to hold one env busy."""

    def __init__(self, gate: threading.Event | None = None):
        self.gate = gate
        self.closed = 0
        self.entered = threading.Event()

    def reset_sync(self, item_id: int) -> str:
        return f"item {item_id}"

    def step_sync(self, action_text: str) -> EnvResult:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        return EnvResult(observation=action_text)

    def close_sync(self) -> None:
        self.closed += 1


async def test_pool_runs_envs_concurrently_and_caps():
    gate = threading.Event()
    made: list[_GatedEnv] = []

    def factory():
        made.append(_GatedEnv(gate if not made else None))
        return made[-1]

    pool = EnvTable(factory, max_envs=2, idle_timeout_s=60)
    slow, fast = await pool.create(), await pool.create()
    with pytest.raises(EnvTableFull):
        await pool.create()
    blocked = asyncio.create_task(pool.call(slow, lambda s: s.env.step_sync("slow")))
    assert await asyncio.to_thread(made[0].entered.wait, 30)  # the slow step holds its thread now
    done = await asyncio.wait_for(pool.call(fast, lambda s: s.env.step_sync("fast")), 5)  # not stuck behind slow
    assert done.observation == "fast" and not blocked.done()
    gate.set()
    assert (await blocked).observation == "slow"
    await pool.close(slow)
    with pytest.raises(UnknownEnv):
        await pool.call(slow, lambda s: None)
    await pool.close_all()
    assert len(pool) == 0 and [e.closed for e in made] == [1, 1]
    with pytest.raises(ValueError, match="max_envs"):
        EnvTable(factory, max_envs=0)
