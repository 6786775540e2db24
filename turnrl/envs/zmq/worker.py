"""An EnvWorker process: many env instances of any registered family, served over ZeroMQ.

Run as ``python -m turnrl.envs.zmq.worker --endpoint ipc://... --identity w0.0``. It connects a
DEALER socket to the engine's ROUTER and answers ``EnvCall`` messages with ``EnvReply``.

Invariants:
- blocking env code runs in this process's thread pool, never on its event loop, so heartbeats go
  out every interval however slow an env is (a worker that stops beating is hung or dead);
- calls on different envs run concurrently; the engine sends one call at a time per env;
- a message that is not one frame decoding as an ``EnvCall`` gets one error reply (``call_id`` -1) and the
  worker keeps serving; an env that raises gets an error reply naming the exception; nothing is pickled;
- the worker exits when its parent process is gone (no orphans).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
from concurrent.futures import ThreadPoolExecutor

import msgspec
import zmq
import zmq.asyncio

from turnrl.envs.base import BlockingEnv, Env
from turnrl.envs.registry import make_env
from turnrl.protocol import EnvCall, EnvReply, WorkerHeartbeat, decode, encode


class EnvHost:
    """The envs of one worker, keyed by the engine's env id."""

    def __init__(self, threads: int):
        self.envs: dict[int, Env] = {}
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="env")

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def handle(self, call: EnvCall) -> EnvReply:
        try:
            return await self._handle(call)
        except Exception as exc:
            return EnvReply(call_id=call.call_id, error=f"{call.op} failed: {exc!r}")

    async def _handle(self, call: EnvCall) -> EnvReply:
        reply = EnvReply(call_id=call.call_id)
        if call.op == "create":
            if call.env_id in self.envs:
                raise ValueError(f"env_id {call.env_id} already exists")
            env = await self._run(lambda: make_env(call.family, **call.options))
            self.envs[call.env_id] = env
            reply.system_prompt = env.system_prompt
            return reply
        env = self.envs.get(call.env_id)
        if env is None:
            raise ValueError(f"no env with env_id {call.env_id}")
        blocking = isinstance(env, BlockingEnv)
        if call.op == "reset":
            reply.observation = await (self._run(env.reset_sync, call.item_id) if blocking else env.reset(call.item_id))
        elif call.op == "step":
            reply.result = await (self._run(env.step_sync, call.action) if blocking else env.step(call.action))
        elif call.op == "valid_actions":
            reply.actions = await env.valid_actions()
        elif call.op == "close":
            del self.envs[call.env_id]
            await (self._run(env.close_sync) if blocking else env.close())
        return reply


async def serve(endpoint: str, identity: str, threads: int = 64, heartbeat_s: float = 0.2) -> None:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    host = EnvHost(threads)
    parent = os.getppid()
    tasks: set[asyncio.Task] = set()

    async def heartbeat() -> None:
        while os.getppid() == parent:
            await sock.send(encode(WorkerHeartbeat(worker=identity, envs=len(host.envs), pid=os.getpid())))
            await asyncio.sleep(heartbeat_s)
        os._exit(0)  # the engine is gone

    async def answer(call: EnvCall) -> None:
        await sock.send(encode(await host.handle(call)))

    beat = asyncio.create_task(heartbeat())
    try:
        while True:
            frames = await sock.recv_multipart()
            if len(frames) != 1:  # one call per message: anything else is answered once, as malformed
                await sock.send(encode(EnvReply(call_id=-1, error=f"bad frame: {len(frames)} parts, expected 1")))
                continue
            try:
                call = decode(frames[0], EnvCall)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await sock.send(encode(EnvReply(call_id=-1, error=f"bad frame: {exc}")))
                continue
            task = asyncio.create_task(answer(call))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        beat.cancel()
        sock.close(0)
        ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve env instances over ZeroMQ.")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--heartbeat-s", type=float, default=0.2)
    parser.add_argument("--plugin", action="append", default=[], help="module to import (registers env families)")
    args = parser.parse_args()
    for module in args.plugin:
        importlib.import_module(module)
    asyncio.run(serve(args.endpoint, args.identity, args.threads, args.heartbeat_s))


if __name__ == "__main__":
    main()
