"""An EnvWorker process: many env instances of any registered family, served over ZeroMQ.

Run as ``python -m turnrl.envs.zmq.worker --endpoint ipc://... --identity w0.0`` (started by a pool: it
connects a DEALER socket to the pool's ROUTER), or as ``turnrl env-worker --bind tcp://HOST:PORT`` (started
by anyone, on any machine: it binds, the pool connects to it and names the connection). Either way it answers
``EnvCall`` messages with ``EnvReply`` and sends heartbeats.

Invariants:
- blocking env code runs in this process's thread pool, never on its event loop, so heartbeats go
  out every interval however slow an env is (a worker that stops beating is hung or dead);
- calls on different envs run concurrently; the engine sends one call at a time per env;
- a message that is not one frame decoding as an ``EnvCall`` gets one error reply (``call_id`` -1) and the
  worker keeps serving; an env that raises gets an error reply naming the exception; nothing is pickled;
- a worker started by a pool exits when its parent process is gone (no orphans); a bound worker serves
  until it is killed, one pool at a time, and an env id created again (by a pool that lost track of the
  first, e.g. after reconnecting) replaces the old env;
- a bound worker listens on loopback unless given another host; ``tcp://HOST:*`` picks a free port, and the
  first line on stdout is ``listening <endpoint>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

    def __init__(self, threads: int, replace_envs: bool = False):
        self.envs: dict[int, Env] = {}
        self.replace_envs = replace_envs
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="env")

    async def _close(self, env: Env) -> None:
        with contextlib.suppress(Exception):
            await (self._run(env.close_sync) if isinstance(env, BlockingEnv) else env.close())

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
                if not self.replace_envs:
                    raise ValueError(f"env_id {call.env_id} already exists")
                await self._close(self.envs.pop(call.env_id))
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


def check_bind_endpoint(endpoint: str) -> str:
    """``tcp://HOST:PORT`` (PORT may be ``*``); anything else raises ``ValueError``."""
    if not endpoint.startswith("tcp://"):
        raise ValueError(f"a bound env worker needs a tcp://HOST:PORT endpoint, got {endpoint!r}")
    host, sep, port = endpoint[len("tcp://") :].rpartition(":")
    if not sep or not host or not (port == "*" or (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"bad endpoint {endpoint!r}: expected tcp://HOST:PORT with PORT in 1-65535 or *")
    return endpoint


async def serve(
    endpoint: str, identity: str, threads: int = 64, heartbeat_s: float = 0.2, *, bind: bool = False, on_bound=None
) -> None:
    """``on_bound(endpoint)`` (bound workers): called with the address it listens on."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity.encode())
    sock.setsockopt(zmq.LINGER, 0)
    if bind:
        sock.bind(check_bind_endpoint(endpoint))
        bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        print(f"listening {bound}", flush=True)
        if on_bound is not None:
            on_bound(bound)
    else:
        sock.connect(endpoint)
    host = EnvHost(threads, replace_envs=bind)
    parent = os.getppid()
    tasks: set[asyncio.Task] = set()

    async def heartbeat() -> None:
        while bind or os.getppid() == parent:
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
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--endpoint", help="a pool's ROUTER to connect to (started by the pool)")
    where.add_argument("--bind", help="tcp://HOST:PORT to listen on for a pool (a worker started by anyone)")
    parser.add_argument("--identity", default=f"worker-{os.getpid()}")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--heartbeat-s", type=float, default=0.2)
    parser.add_argument("--plugin", action="append", default=[], help="module to import (registers env families)")
    args = parser.parse_args()
    if args.bind:
        try:
            check_bind_endpoint(args.bind)
        except ValueError as exc:
            parser.error(str(exc))
    for module in args.plugin:
        importlib.import_module(module)
    endpoint = args.bind or args.endpoint
    asyncio.run(serve(endpoint, args.identity, args.threads, args.heartbeat_s, bind=args.bind is not None))


if __name__ == "__main__":
    main()
