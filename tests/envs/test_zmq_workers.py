"""EnvWorker processes over ZeroMQ: remote envs behave like local ones; a dead or hung worker ends
only its own episodes, is restarted and serves again; bad frames get an error reply."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys

import msgspec
import psutil
import pytest
import zmq
import zmq.asyncio

from bench.latency_model import LatencyModelGenerator, Workload, WorkloadConfig
from turnrl.config.envs import EnvWorkerConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.engine.rollout.run import EnvPool, run_episodes
from turnrl.envs.babyai import BabyAIEnv
from turnrl.envs.zmq.pool import EnvWorkerPool
from turnrl.errors import EnvWorkerLost
from turnrl.protocol import EnvCall, Task, WorkerMessage, decode, encode

FAST = EnvWorkerConfig(workers=2, threads_per_worker=8, heartbeat_s=0.1, heartbeat_timeout_s=2.0)


class ManualClock:
    """The pool's clock, moved only by the test: no worker ever looks silent because the machine is slow."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def slow_generator(step_s: float = 0.02, tokens: int = 3) -> LatencyModelGenerator:
    """Each turn takes ``tokens`` decode steps of about ``step_s``: episodes stay in flight a while."""
    workload = Workload(WorkloadConfig(episodes=1, step_base_s=step_s, step_per_seq_s=0.0))
    return LatencyModelGenerator(workload, tokens_of=lambda request: tokens)


async def test_remote_babyai_matches_local_on_random_items_and_actions():
    rng = random.Random(7)
    async with EnvWorkerPool(FAST, clock=ManualClock()) as pool:
        for item in rng.sample(range(10_000), 3):
            remote, local = pool.env("babyai", level="GoToLocal"), BabyAIEnv("GoToLocal")
            assert await remote.reset(item) == local.reset_sync(item)
            assert remote.system_prompt == local.system_prompt
            for _ in range(4):
                actions = await remote.valid_actions()
                assert actions == local.valid_actions_sync()
                action = f"Action: {rng.choice(actions)}" if rng.random() < 0.8 else "gibberish"
                got, want = await remote.step(action), local.step_sync(action)
                assert got == want
                if want.done:
                    break
            await remote.close()


async def _rollout_with_fault(chat, fault, tasks: int = 16, turn_cap: int = 6, after_replies: int = 40):
    """Run ``tasks`` BabyAI episodes on two workers; apply ``fault(pool, clock)`` (awaited) once worker 0 is
    mid-rollout. The pool's clock moves only when ``fault`` moves it."""
    clock = ManualClock()
    async with EnvWorkerPool(FAST, clock=clock) as pool:
        envs = EnvPool(lambda: pool.env("babyai", level="GoToLocal"))
        generator = slow_generator()
        config = EpisodeConfig(turn_cap=turn_cap, max_new_tokens=3)
        work = asyncio.create_task(
            run_episodes([Task(env="babyai", item_id=i) for i in range(tasks)], envs, generator, chat, config)
        )
        await asyncio.wait_for(_until(lambda: pool.workers[0].replies + pool.workers[1].replies >= after_replies), 30)
        victim_pid = await fault(pool, clock)
        trajectories = await work
        # the restarted worker serves again (the victim's envs were closed: new ones land on it)
        await asyncio.wait_for(pool.workers[0].ready.wait(), 30)
        await asyncio.wait_for(pool.workers[1].ready.wait(), 30)
        served_before = [w.replies for w in pool.workers]
        again = await run_episodes(
            [Task(env="babyai", item_id=100 + i) for i in range(tasks)], envs, generator, chat, config
        )
        served_after = [w.replies for w in pool.workers]
        await generator.close()
        return trajectories, again, victim_pid, pool.pids(), pool.restarts, served_before, served_after


def _check_fault_outcome(result, victim_index: int, tasks: int = 16):
    trajectories, again, victim_pid, pids, restarts, before, after = result
    assert len(trajectories) == tasks
    lost = [t for t in trajectories if t.end_reason == "env_error"]
    kept = [t for t in trajectories if t.end_reason != "env_error"]
    # envs are placed on the least-loaded worker: half of the episodes lived on the victim
    assert len(lost) == tasks // 2, [t.end_reason for t in trajectories]
    assert all(f"env worker {victim_index}" in t.error for t in lost)
    assert all(t.end_reason == "turn_cap" and len(t.turns) == 6 for t in kept)
    assert restarts == 1 and pids[victim_index] != victim_pid
    assert all(t.end_reason == "turn_cap" for t in again)
    assert after[victim_index] > before[victim_index]  # the new worker served the second rollout


async def test_killed_worker_ends_only_its_episodes_and_is_restarted(chat):
    async def kill(pool, clock):
        pid = pool.workers[0].process.pid
        os.kill(pid, signal.SIGKILL)
        return pid

    _check_fault_outcome(await _rollout_with_fault(chat, kill), victim_index=0)


async def test_hung_worker_is_detected_by_heartbeat_and_restarted(chat):
    async def hang(pool, clock):
        pid = pool.workers[1].process.pid
        os.kill(pid, signal.SIGSTOP)  # alive but silent: only the heartbeat timeout can tell
        # half a heartbeat timeout at a time, each time until the live worker has beaten again: only the
        # stopped one ever falls more than heartbeat_timeout_s behind the pool's clock
        while pool.restarts == 0:
            clock.advance(FAST.heartbeat_timeout_s / 4)
            beats = pool.workers[0].heartbeats
            await asyncio.wait_for(_until(lambda b=beats: pool.workers[0].heartbeats > b or pool.restarts > 0), 30)
        return pid

    result = await _rollout_with_fault(chat, hang)
    _check_fault_outcome(result, victim_index=1)
    with pytest.raises(ProcessLookupError):
        os.kill(result[2], 0)  # the hung process was killed (and reaped)


async def test_bad_frames_get_an_error_reply_and_the_worker_keeps_serving():
    async with EnvWorkerPool(EnvWorkerConfig(workers=1, heartbeat_s=0.1), clock=ManualClock()) as pool:
        worker = pool.workers[0]
        bad = [
            b"\xc1\xff not msgpack",
            encode(msgspec.Struct()) + b"x",
            msgspec.msgpack.encode({"call_id": 1, "op": "explode", "env_id": 0}),
            msgspec.msgpack.encode({"call_id": "one", "op": "reset", "env_id": 0}),
            msgspec.msgpack.encode({"call_id": 2, "op": "reset", "env_id": 0, "not_a_field": 1}),
            msgspec.msgpack.encode({"op": "reset", "env_id": 0}),
        ]
        for frame in bad:
            await pool._sock.send_multipart([worker.identity, frame])
        await asyncio.wait_for(_until(lambda: len(pool.errors) >= len(bad)), 10)
        assert len(pool.errors) == len(bad) and all(e.startswith("bad frame") for e in pool.errors)
        assert "unknown field `not_a_field`" in pool.errors[-2]
        assert "missing required field `call_id`" in pool.errors[-1]
        env = pool.env("babyai", level="GoToLocal")
        assert await env.reset(5) == BabyAIEnv("GoToLocal").reset_sync(5)
        # an env call that fails in the worker is an error for that call only
        with pytest.raises(RuntimeError, match="unknown env"):
            await pool.env("no-such-family").reset(0)
        with pytest.raises(RuntimeError, match="no env with env_id"):
            await pool.call(worker, worker.generation, op="reset", env_id=10**9, item_id=0)
        assert pool.restarts == 0 and worker.process.poll() is None  # the worker kept serving


async def test_a_stale_env_cannot_step_but_can_reset_on_a_new_worker():
    async with EnvWorkerPool(FAST, clock=ManualClock()) as pool:
        env = pool.env("babyai", level="GoToLocal")
        first = await env.reset(11)
        old_pid = env.pid
        victim = env.worker
        os.kill(old_pid, signal.SIGKILL)
        await asyncio.wait_for(_until(lambda: pool.restarts == 1), 10)
        with pytest.raises(EnvWorkerLost):
            await env.step("Action: turn left")
        assert await env.reset(11) == first and env.pid is not None and env.pid != old_pid
        assert victim.generation == 1


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    "bad", [dict(workers=0), dict(threads_per_worker=0), dict(heartbeat_s=1.0, heartbeat_timeout_s=0.5)]
)
def test_bad_worker_config(bad):
    with pytest.raises(ValueError):
        EnvWorkerConfig(**bad)


def test_env_call_rejects_unknown_ops():
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(
            msgspec.msgpack.encode({"call_id": 1, "op": "explode", "env_id": 0}), type=EnvCall, strict=True
        )


# ---- a worker's parent dies ------------------------------------------------------------------------------------
PARENT = """
import subprocess, sys
cmd = [sys.executable, "-m", "turnrl.envs.zmq.worker", "--endpoint", sys.argv[1], "--identity", "orphan"]
worker = subprocess.Popen(cmd + ["--heartbeat-s", "0.05"], stdin=subprocess.DEVNULL)
print(worker.pid, flush=True)
worker.wait()
"""


async def test_a_worker_exits_when_its_parent_is_killed(tmp_path):
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path}/router.sock"
    sock.bind(endpoint)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, endpoint], stdout=subprocess.PIPE, text=True)
    try:
        worker_pid = int(await asyncio.to_thread(parent.stdout.readline))
        _, frame = await asyncio.wait_for(sock.recv_multipart(), 60)  # the worker is up and beating
        assert decode(frame, WorkerMessage).pid == worker_pid
        worker = psutil.Process(worker_pid)
        assert worker.ppid() == parent.pid
        parent.kill()  # SIGKILL: the parent runs no cleanup, its child is orphaned
        parent.wait()
        await asyncio.wait_for(_until(lambda: _gone(worker)), 30)  # a hang guard: the worker exits by itself
    finally:
        parent.kill()
        parent.wait()
        with contextlib.suppress(psutil.NoSuchProcess, NameError):
            worker.kill()
        sock.close(0)
        ctx.term()


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # exited; reaping is its new parent's business
    except psutil.NoSuchProcess:
        return True


# ---- a worker that sends the pool bad frames -------------------------------------------------------------------
FAKE_WORKER = """
import os, sys
import msgspec, zmq
from turnrl.protocol import EnvCall, EnvReply, WorkerHeartbeat, decode, encode
endpoint, identity, mode = sys.argv[1:4]
sock = zmq.Context().socket(zmq.DEALER)
sock.setsockopt(zmq.IDENTITY, identity.encode())
sock.setsockopt(zmq.LINGER, 0)
sock.connect(endpoint)
while True:
    sock.send(encode(WorkerHeartbeat(worker=identity, envs=0, pid=os.getpid())))
    if not sock.poll(50):
        continue
    call = decode(sock.recv(), EnvCall)
    if call.op != "step":
        sock.send(encode(EnvReply(call_id=call.call_id, system_prompt="", observation="a fake room")))
    elif mode == "garbage":
        sock.send(bytes(range(200, 256)))
    elif mode == "wrong_type":  # a reply naming its call, with a field of the wrong type
        sock.send(msgspec.msgpack.encode({"call_id": call.call_id, "observation": 7, "type": "reply"}))
    elif mode == "unknown_field":
        sock.send(msgspec.msgpack.encode({"call_id": call.call_id, "observation": "x", "mood": 1, "type": "reply"}))
    else:  # missing_field: a reply without its call_id
        sock.send(msgspec.msgpack.encode({"observation": "x", "type": "reply"}))
"""


class _PoolWithAFakeWorker(EnvWorkerPool):
    """Worker 1 is ``FAKE_WORKER``: a real process on a real socket that answers every step with a bad frame."""

    def __init__(self, config, mode: str):
        super().__init__(config, clock=ManualClock())
        self.mode = mode

    def _command(self, worker):
        if worker.index == 1:
            return [sys.executable, "-c", FAKE_WORKER, self.endpoint, worker.identity.decode(), self.mode]
        return super()._command(worker)


@pytest.mark.parametrize("mode", ["garbage", "wrong_type", "unknown_field", "missing_field"])
async def test_a_bad_frame_from_a_worker_ends_only_the_episode_it_answered(chat, mode):
    async with _PoolWithAFakeWorker(FAST, mode) as pool:
        envs = EnvPool(lambda: pool.env("babyai", level="GoToLocal"))
        generator = slow_generator(step_s=0.0)
        config = EpisodeConfig(turn_cap=3, max_new_tokens=3, env_timeout_s=60)
        # the first env is placed on worker 0 (real), the second on worker 1 (fake), before either yields
        tasks = [Task(env="babyai", item_id=i) for i in range(2)]
        real, fake = await run_episodes(tasks, envs, generator, chat, config)
        assert real.end_reason == "turn_cap" and len(real.turns) == 3
        assert fake.end_reason == "env_error" and not fake.turns
        assert "env worker 1 sent a frame that does not decode" in fake.error
        needle = {
            "wrong_type": "`$.observation`",
            "unknown_field": "unknown field `mood`",
            "missing_field": "missing required field `call_id`",
        }
        assert needle.get(mode, "") in fake.error
        assert pool.bad_frames == 1 and pool.restarts == 0
        assert all(w.process.poll() is None for w in pool.workers)
        # the pool goes on serving on both workers: the real env again, and a new env placed on the fake one
        again = await run_episodes([Task(env="babyai", item_id=5)], envs, generator, chat, config)
        assert again[0].end_reason == "turn_cap" and len(again[0].turns) == 3
        env = pool.env("babyai", level="GoToLocal")
        assert await env.reset(5) == "a fake room" and env.worker is pool.workers[1]
        await generator.close()
