"""Envs in EnvWorker processes, seen by episodes as ordinary ``Env`` objects.

``EnvWorkerPool`` binds one ROUTER socket (``ipc://``), starts N worker processes (DEALERs, see
``worker.py``) and places each new env on the least-loaded live worker; ``WorkerEnv`` is the
adapter that implements ``Env`` by calls to its worker.

Invariants:
- a worker that exits or misses heartbeats for ``heartbeat_timeout_s`` is killed and restarted under
  a new identity; every call in flight on it fails with ``EnvWorkerLost`` (so its episodes end with
  ``env_error``), and no other worker's calls are touched;
- an env whose worker was replaced fails its next ``step``, but a ``reset`` re-creates it on a live
  worker, so a pooled env survives a restart between episodes;
- frames are msgspec msgpack both ways; a frame from a worker that does not decode is counted in
  ``bad_frames`` and never fatal: it fails, with an ``EnvError`` naming the decode error, the call it names
  (a msgpack map with a pending ``call_id``) or, when it names none, every call in flight on that worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import msgspec
import zmq
import zmq.asyncio

from turnrl.config.envs import EnvWorkerConfig
from turnrl.envs.base import Env
from turnrl.errors import EnvError, EnvWorkerLost
from turnrl.protocol import EnvCall, EnvReply, EnvResult, WorkerHeartbeat, WorkerMessage, decode, encode


class _Worker:
    def __init__(self, index: int):
        self.index = index
        self.generation = -1
        self.identity = b""
        self.process: subprocess.Popen | None = None
        self.pending: dict[int, asyncio.Future] = {}
        self.ready = asyncio.Event()
        self.last_seen = 0.0
        self.envs = 0
        self.replies = 0
        self.heartbeats = 0


class EnvWorkerPool:
    """``clock`` (seconds, monotonic) measures heartbeat silence; a test may pass one it advances by hand."""

    def __init__(self, config: EnvWorkerConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self.config = config = config or EnvWorkerConfig()
        self.clock = clock
        self._dir = tempfile.mkdtemp(prefix="turnrl-envw-")
        self.endpoint = f"ipc://{self._dir}/router.sock"
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(self.endpoint)
        self.workers = [_Worker(i) for i in range(config.workers)]
        self._by_identity: dict[bytes, _Worker] = {}
        self._call_ids = itertools.count()
        self._env_ids = itertools.count()
        self._tasks: list[asyncio.Task] = []
        self.restarts = 0
        self.bad_frames = 0
        self.errors: list[str] = []  # error replies that answered no call (bad frames we sent)

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> EnvWorkerPool:
        for worker in self.workers:
            self._spawn(worker)
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._monitor())]
        async with asyncio.timeout(self.config.start_timeout_s):
            await asyncio.gather(*(w.ready.wait() for w in self.workers))
        return self

    async def __aenter__(self) -> EnvWorkerPool:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _spawn(self, worker: _Worker) -> None:
        worker.generation += 1
        worker.identity = f"w{worker.index}.{worker.generation}".encode()
        worker.ready = asyncio.Event()
        worker.last_seen = self.clock()
        worker.envs = 0
        self._by_identity[worker.identity] = worker
        worker.process = subprocess.Popen(self._command(worker), stdin=subprocess.DEVNULL)

    def _command(self, worker: _Worker) -> list[str]:
        """The command line of ``worker``'s process (connects to ``endpoint`` as ``worker.identity``)."""
        cmd = [
            sys.executable,
            "-m",
            "turnrl.envs.zmq.worker",
            "--endpoint",
            self.endpoint,
            "--identity",
            worker.identity.decode(),
            "--threads",
            str(self.config.threads_per_worker),
            "--heartbeat-s",
            str(self.config.heartbeat_s),
        ]
        for plugin in self.config.plugins:
            cmd += ["--plugin", plugin]
        return cmd

    def _restart(self, worker: _Worker, why: str) -> None:
        lost = EnvWorkerLost(f"env worker {worker.index} (pid {worker.process.pid}) {why}")
        pending, worker.pending = worker.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(lost)
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()
        worker.process.wait()
        del self._by_identity[worker.identity]
        self.restarts += 1
        self._spawn(worker)

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            now = self.clock()
            for worker in self.workers:
                code = worker.process.poll()
                if code is not None:
                    self._restart(worker, f"exited with code {code}")
                elif now - worker.last_seen > self.config.heartbeat_timeout_s:
                    grace = self.config.start_timeout_s if not worker.ready.is_set() else 0.0
                    if now - worker.last_seen > self.config.heartbeat_timeout_s + grace:
                        self._restart(worker, f"sent no heartbeat for {now - worker.last_seen:.1f} s")

    async def _receive(self) -> None:
        while True:
            identity, frame = await self._sock.recv_multipart()
            worker = self._by_identity.get(identity)
            if worker is None:
                continue  # a replaced worker's last words
            try:
                message = decode(frame, WorkerMessage)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.bad_frames += 1
                self._fail_unreadable(worker, frame, exc)
                continue
            worker.last_seen = self.clock()
            if isinstance(message, WorkerHeartbeat):
                worker.heartbeats += 1
                worker.ready.set()
                continue
            future = worker.pending.pop(message.call_id, None)
            if future is None:
                if message.error:
                    self.errors.append(message.error)
                continue
            worker.replies += 1
            if not future.done():
                future.set_result(message)

    def _fail_unreadable(self, worker: _Worker, frame: bytes, exc: Exception) -> None:
        """A frame from ``worker`` that is no ``WorkerMessage`` fails the call it names (a msgpack map with a
        pending ``call_id``), or else every call in flight on that worker: which one it answered is unknown."""
        call_id = None
        with contextlib.suppress(msgspec.DecodeError):
            loose = msgspec.msgpack.decode(frame)
            if isinstance(loose, dict) and isinstance(loose.get("call_id"), int) and loose["call_id"] in worker.pending:
                call_id = loose["call_id"]
        ids = [call_id] if call_id is not None else list(worker.pending)
        error = EnvError(f"env worker {worker.index} sent a frame that does not decode ({exc}); this call is lost")
        for i in ids:
            future = worker.pending.pop(i)
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
            for future in worker.pending.values():
                if not future.done():
                    future.set_exception(EnvWorkerLost("the worker pool was closed"))
        self._sock.close(0)
        self._ctx.term()
        shutil.rmtree(self._dir, ignore_errors=True)

    # ---- calls ----------------------------------------------------------------------------------
    def place(self) -> _Worker:
        return min(self.workers, key=lambda w: (not w.ready.is_set(), w.envs))

    async def call(self, worker: _Worker, generation: int, **fields) -> EnvReply:
        """Send one call to ``worker`` if it is still the given generation; await its reply."""
        await worker.ready.wait()
        if worker.generation != generation:
            raise EnvWorkerLost(f"env worker {worker.index} was restarted; this env is gone")
        call = EnvCall(call_id=next(self._call_ids), **fields)
        future = asyncio.get_running_loop().create_future()
        worker.pending[call.call_id] = future
        try:
            await self._sock.send_multipart([worker.identity, encode(call)])
        except zmq.ZMQError as exc:
            worker.pending.pop(call.call_id, None)
            raise EnvWorkerLost(f"env worker {worker.index} unreachable: {exc}") from None
        try:
            reply = await future
        finally:
            worker.pending.pop(call.call_id, None)
        if reply.error is not None:
            raise RuntimeError(f"env worker {worker.index}: {reply.error}")
        return reply

    def env(self, family: str, **options) -> WorkerEnv:
        return WorkerEnv(self, family, options)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers]


class WorkerEnv(Env):
    """An env living in an EnvWorker; behaves like the local env of the same family."""

    def __init__(self, pool: EnvWorkerPool, family: str, options: dict):
        self.pool, self.family, self.options = pool, family, dict(options)
        self.env_id = next(pool._env_ids)
        self.worker: _Worker | None = None
        self.generation = -1
        self.system_prompt = ""

    def _alive(self) -> bool:
        return self.worker is not None and self.worker.generation == self.generation

    async def _call(self, op: str, **fields) -> EnvReply:
        return await self.pool.call(self.worker, self.generation, op=op, env_id=self.env_id, **fields)

    async def reset(self, item_id: int) -> str:
        if not self._alive():
            worker = self.pool.place()
            await worker.ready.wait()
            self.worker, self.generation = worker, worker.generation
            worker.envs += 1
            try:
                reply = await self._call("create", family=self.family, options=self.options)
            except Exception:
                self.worker = None
                worker.envs -= 1
                raise
            self.system_prompt = reply.system_prompt or ""
        return (await self._call("reset", item_id=item_id)).observation

    def _check_alive(self) -> None:
        if not self._alive():
            where = f"env worker {self.worker.index}" if self.worker is not None else "its env worker"
            raise EnvWorkerLost(f"{where} was restarted; this env's episode state is gone (call reset)")

    async def step(self, action_text: str) -> EnvResult:
        self._check_alive()
        return (await self._call("step", action=action_text)).result

    async def valid_actions(self) -> list[str] | None:
        self._check_alive()
        return (await self._call("valid_actions")).actions

    async def close(self) -> None:
        if self._alive():
            worker = self.worker
            self.worker = None
            worker.envs -= 1
            with contextlib.suppress(Exception):
                await self.pool.call(worker, self.generation, op="close", env_id=self.env_id)

    @property
    def pid(self) -> int | None:
        return self.worker.process.pid if self._alive() else None


__all__ = ["EnvWorkerPool", "WorkerEnv"]
