"""The client of a GenerationService: a ``Generator`` over one ZeroMQ DEALER socket, and the service's process.

Invariants:
- every call is answered exactly once: with the reply whose ``request_id`` matches it, ``BadRequest`` (a
  ``ValueError``) for a call the service refused as malformed or a duplicate, ``ServiceError`` for any other error
  reply, or a ``TimeoutError`` when the client-side timeout passes (the service is then told to abort it); any
  number of calls share the socket concurrently, matched by request id; a reply that does not decode fails the
  call it names with ``ServiceError`` [malformed] (one naming none is counted in ``bad_replies``);
- ``generate`` returns a result only for stop/length; a service-side timeout raises ``GenerationTimeout`` (a
  ``TimeoutError``, so an episode ends with ``gen_timeout``) carrying the partial result; a request aborted by a
  weight update under the ``abort`` policy is resumed from its partial output (``resubmit_on_update``; see
  ``partial``); other aborts are returned with finish reason ``abort``;
- ``weight_version`` is the newest version this client has seen in any reply; ``push_weights`` sends the tensors
  over the socket (no disk) and ``close`` stops a service process this client was handed (``owned_process``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import time
import uuid
from pathlib import Path

import msgspec
import torch
import zmq
import zmq.asyncio

from turnrl.config.generation import ServiceConfig
from turnrl.engine.generation.base import Generator, GeneratorStats
from turnrl.engine.generation.partial import generate_resuming
from turnrl.engine.generation.service import run_service_from_json
from turnrl.errors import BadRequest, ServiceError
from turnrl.models.weights import pack_tensors
from turnrl.protocol import (
    MAX_FRAME_BYTES,
    AbortCall,
    AckReply,
    ErrorReply,
    GenerateCall,
    GenerateReply,
    GenerateRequest,
    GenerateResult,
    InFlightPolicy,
    PauseCall,
    ResumeCall,
    ServiceReplyKind,
    ServiceStats,
    ShutdownCall,
    StatsCall,
    UpdateWeightsCall,
    encode,
)

_reply_decoder = msgspec.msgpack.Decoder(ServiceReplyKind, strict=True)


class ServiceGenerator(Generator):
    def __init__(
        self,
        address: str,
        request_timeout_s: float | None = None,
        service_timeout_s: float | None = None,
        resubmit_on_update: bool = True,
        max_resubmits: int = 8,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        owned_process: ServiceProcess | None = None,
    ):
        if request_timeout_s is not None and request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {request_timeout_s}")
        self.address = address
        self.owned_process = owned_process
        self.request_timeout_s = request_timeout_s
        self.service_timeout_s = service_timeout_s
        self.resubmit_on_update = resubmit_on_update
        self.max_resubmits = max_resubmits
        self.max_frame_bytes = max_frame_bytes
        self._version = 0
        self._socket: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task | None = None
        self._futures: dict[str, asyncio.Future] = {}
        self._ids = itertools.count()
        self._tag = uuid.uuid4().hex[:8]
        self.unmatched_errors: list[ErrorReply] = []  # error replies to frames the service could not read
        self.bad_replies = 0  # replies that did not decode

    @property
    def weight_version(self) -> int:
        return self._version

    # ---- transport ------------------------------------------------------------------------------------------------
    def _ensure_open(self) -> None:
        loop = asyncio.get_running_loop()
        if self._reader is not None and self._reader.get_loop() is loop and not self._reader.done():
            return
        if self._socket is not None:
            self._socket.close(linger=0)
        self._socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(self.address)
        self._reader = loop.create_task(self._read())

    async def _read(self) -> None:
        while True:
            frames = await self._socket.recv_multipart()
            try:
                reply = _reply_decoder.decode(frames[-1])
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self._fail_unreadable(frames[-1], exc)
                continue
            if isinstance(reply, GenerateReply) and reply.result.versions:
                self._version = max(self._version, max(reply.result.versions))
            elif isinstance(reply, AckReply | ServiceStats):
                self._version = max(self._version, reply.weight_version)
            if reply.request_id is None:
                self.unmatched_errors.append(reply)
                continue
            future = self._futures.pop(reply.request_id, None)
            if future is None:
                continue  # the caller gave up waiting (client-side timeout)
            if not future.done():
                future.set_result(reply)

    def _fail_unreadable(self, frame: bytes, exc: Exception) -> None:
        """A reply that does not decode fails the call it names (a msgpack map with a waiting ``request_id``) with
        ``ServiceError`` [malformed]; one that names none is counted in ``bad_replies`` (its call times out)."""
        self.bad_replies += 1
        with contextlib.suppress(msgspec.DecodeError):
            loose = msgspec.msgpack.decode(frame)
            request_id = loose.get("request_id") if isinstance(loose, dict) else None
            future = self._futures.pop(request_id, None) if isinstance(request_id, str) else None
            if future is not None and not future.done():
                future.set_exception(ServiceError("malformed", f"the reply does not decode: {exc}", request_id))

    async def call(self, call, timeout_s: float | None = None):
        """Send one call and wait for its reply; an error reply raises ``ServiceError``."""
        self._ensure_open()
        if call.request_id in self._futures:
            raise ValueError(f"request_id {call.request_id!r} is already waiting for a reply")
        frame = encode(call)
        if len(frame) > self.max_frame_bytes:  # the service could not say which call its error answers
            raise ValueError(
                f"{type(call).__name__} {call.request_id!r}: frame of {len(frame)} bytes exceeds "
                f"max_frame_bytes={self.max_frame_bytes}"
            )
        future = asyncio.get_running_loop().create_future()
        self._futures[call.request_id] = future
        try:
            await self._socket.send(frame)
            reply = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            if isinstance(call, GenerateCall):
                with contextlib.suppress(Exception):
                    await self._socket.send(
                        encode(AbortCall(request_id=self._new_id("abort"), targets=[call.request_id]))
                    )
            raise
        finally:
            self._futures.pop(call.request_id, None)
        if isinstance(reply, ErrorReply):
            if reply.code in ("bad_request", "duplicate"):
                raise BadRequest(f"generation service refused {reply.request_id!r} [{reply.code}]: {reply.message}")
            raise ServiceError(reply.code, reply.message, reply.request_id)
        return reply

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{self._tag}-{next(self._ids)}"

    # ---- Generator ------------------------------------------------------------------------------------------------
    async def generate(self, request: GenerateRequest, timeout_s: float | None = None) -> GenerateResult:
        """``timeout_s`` (default ``service_timeout_s``) is enforced by the service; ``request_timeout_s`` here."""
        service_timeout = timeout_s if timeout_s is not None else self.service_timeout_s

        async def send(pending: GenerateRequest):
            call = GenerateCall(request_id=request.request_id, request=pending, timeout_s=service_timeout)
            reply: GenerateReply = await self.call(call, self.request_timeout_s)
            return reply.result, reply.retry and self.resubmit_on_update

        return await generate_resuming(send, request, self.max_resubmits + 1)

    # ---- control --------------------------------------------------------------------------------------------------
    async def abort(self, *request_ids: str) -> int:
        reply = await self.call(AbortCall(request_id=self._new_id("abort"), targets=list(request_ids)))
        return reply.affected

    async def abort_all(self) -> int:
        return (await self.call(AbortCall(request_id=self._new_id("abort"), all=True))).affected

    async def pause(self, mode: str = "in_place") -> AckReply:
        return await self.call(PauseCall(request_id=self._new_id("pause"), mode=mode))

    async def resume(self) -> AckReply:
        return await self.call(ResumeCall(request_id=self._new_id("resume")))

    async def update_weights(
        self,
        path: str | None = None,
        tensors: dict[str, torch.Tensor] | None = None,
        version: int | None = None,
        in_flight: InFlightPolicy | None = None,
    ) -> int:
        """New weights from a saved model directory or named tensors; returns the new weight version."""
        packed = pack_tensors(tensors) if tensors is not None else None
        reply = await self.call(
            UpdateWeightsCall(
                request_id=self._new_id("update"), path=path, tensors=packed, version=version, in_flight=in_flight
            )
        )
        return reply.weight_version

    async def service_stats(self, timeout_s: float | None = None) -> ServiceStats:
        """The service's own figures (running, waiting, steps, errors replied, ...)."""
        return await self.call(StatsCall(request_id=self._new_id("stats")), timeout_s)

    async def stats(self) -> GeneratorStats:
        s = await self.service_stats()
        return GeneratorStats(
            weight_version=s.weight_version,
            requests_finished=s.requests_finished,
            tokens_generated=s.tokens_generated,
            busy_seconds=s.busy_seconds,
            prefill_tokens=s.prefill_tokens,
            reused_tokens=s.reused_tokens,
            shared_prefill_tokens=s.shared_prefill_tokens,
            prefix_lookups=s.prefix_lookups,
            prefix_hits=s.prefix_hits,
        )

    async def push_weights(self, model, tokenizer, staging_dir: Path) -> int:
        """The learner's weights as raw tensors over the socket (no disk); returns the new version."""
        tensors = {name: t.detach().cpu() for name, t in model.state_dict().items()}
        return await self.update_weights(tensors=tensors, version=self.weight_version + 1)

    async def shutdown(self) -> None:
        await self.call(ShutdownCall(request_id=self._new_id("shutdown")), 10.0)

    async def close(self) -> None:
        """Close the socket, and stop the service process if this client started it (``owned_process``)."""
        for future in self._futures.values():
            if not future.done():
                future.cancel()
        self._futures.clear()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._reader
            self._reader = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        if self.owned_process is not None:
            process, self.owned_process = self.owned_process, None
            await asyncio.to_thread(process.stop)


class ServiceProcess:
    """Start a GenerationService in a fresh (spawned) process and stop it; ``start`` waits until it answers."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.process: multiprocessing.Process | None = None

    def start(self, timeout_s: float = 120.0) -> ServiceProcess:
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=run_service_from_json,
            args=(msgspec.json.encode(self.config),),
            daemon=True,
            name="turnrl-generation-service",
        )
        self.process.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.process.is_alive():
                raise RuntimeError(f"generation service exited with code {self.process.exitcode} while starting")
            if self._ask(StatsCall(request_id="health"), 0.5) is not None:
                return self
        self.stop()
        raise TimeoutError(f"generation service at {self.config.address} did not answer within {timeout_s} s")

    def _ask(self, call, timeout_s: float):
        with zmq.Context.instance().socket(zmq.DEALER) as sock:
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.config.address)
            sock.send(encode(call))
            if not sock.poll(int(timeout_s * 1000)):
                return None
            return _reply_decoder.decode(sock.recv_multipart()[-1])

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.is_alive():
            with contextlib.suppress(Exception):
                self._ask(ShutdownCall(request_id="shutdown"), 2.0)
            self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5.0)
        self.process = None

    def __enter__(self) -> ServiceProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
