"""GenerationService: the generation engine behind a ZeroMQ ROUTER socket, in its own process.

Invariants:
- every frame gets exactly one reply to its sender: a malformed frame (not msgpack, wrong schema, not one payload
  frame) or an oversized one gets an ``ErrorReply`` and nothing else happens (a frame past twice the limit is
  refused by the transport, which drops that connection instead; a frame nested too deeply to read is malformed
  too); a bad request (empty or out-of-vocabulary ids,
  too long, bad sampling values, a request id already running) gets an ``ErrorReply`` naming the field; the
  service keeps serving after any of them, and a failing forward ends only the requests of that batch with an
  ``internal`` error;
- a generate call is answered once with its ``GenerateResult`` (see ``engine``: versions per token, stop, length,
  abort, timeout with the tokens sampled so far); requests are keyed by (sender identity, request id), so two
  clients may use the same ids;
- weight updates, pause and resume are the engine's (``in_flight`` continue or abort, per service or per call);
  control calls never block receiving.

Run it with ``python -m turnrl.engine.generation.service --config '<json ServiceConfig>'`` or ``ServiceProcess``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import msgspec
import torch
import zmq
import zmq.asyncio

from turnrl.config.generation import ServiceConfig
from turnrl.engine.generation.engine import GenerationEngine
from turnrl.errors import BadRequest, DuplicateRequest, GenerationError
from turnrl.models.weights import load_directory_into, load_tensors_into, unpack_tensors
from turnrl.protocol import (
    AbortCall,
    AckReply,
    ErrorReply,
    GenerateCall,
    GenerateReply,
    PauseCall,
    ResumeCall,
    ServiceCallKind,
    ServiceStats,
    ShutdownCall,
    StatsCall,
    UpdateWeightsCall,
    encode,
)


def hard_frame_limit(max_frame_bytes: int) -> int:
    return 2 * max_frame_bytes + 65536


class _Envelope(msgspec.Struct):
    request_id: str


_envelope = msgspec.msgpack.Decoder(_Envelope)


def _request_id_of(payload: bytes) -> str | None:
    """The request id of a frame that is msgpack but not a valid call, so the error reply can name it."""
    try:
        return _envelope.decode(payload).request_id
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):  # skipping a deeply nested field
        return None


class GenerationService:
    def __init__(self, config: ServiceConfig, model, pad_token_id: int):
        self.config = config
        self.model = model
        self.engine = GenerationEngine(
            model,
            pad_token_id,
            max_running=config.max_running,
            seed=config.seed,
            kv_cache_tokens=config.kv_cache_tokens,
            default_timeout_s=config.default_timeout_s,
            in_flight=config.in_flight,
        )
        self._decoder = msgspec.msgpack.Decoder(ServiceCallKind, strict=True)
        self._stop = asyncio.Event()
        self._socket: zmq.asyncio.Socket | None = None
        self._control_tasks: set[asyncio.Task] = set()
        self.errors_replied = 0

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    async def serve(self) -> None:
        context = zmq.asyncio.Context.instance()
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 1000)
        # Frames up to max_frame_bytes are read, and those above it answered with "too_large"; far larger
        # ones are refused by the transport before they fill memory (it drops that connection: no reply).
        self._socket.setsockopt(zmq.MAXMSGSIZE, hard_frame_limit(self.config.max_frame_bytes))
        self._socket.bind(self.config.address)
        receiver = asyncio.create_task(self._receive())
        try:
            await self._stop.wait()
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
            await self.engine.close()
            self._socket.close()

    def _send(self, identity: bytes, reply) -> None:
        if isinstance(reply, ErrorReply):
            self.errors_replied += 1
        self._socket.send_multipart([identity, encode(reply)])  # ROUTER never blocks: completes at once

    # ---- receiving ------------------------------------------------------------------------------------------------
    async def _receive(self) -> None:
        while True:
            frames = await self._socket.recv_multipart()
            identity, payload = frames[0], frames[1:]
            if len(payload) != 1:
                self._send(
                    identity,
                    ErrorReply(
                        request_id=None, code="malformed", message=f"expected one payload frame, got {len(payload)}"
                    ),
                )
                continue
            if len(payload[0]) > self.config.max_frame_bytes:
                self._send(
                    identity,
                    ErrorReply(
                        request_id=None,
                        code="too_large",
                        message=(
                            f"frame of {len(payload[0])} bytes exceeds max_frame_bytes={self.config.max_frame_bytes}"
                        ),
                    ),
                )
                continue
            try:
                call = self._decoder.decode(payload[0])
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
                self._send(
                    identity, ErrorReply(request_id=_request_id_of(payload[0]), code="malformed", message=str(exc))
                )
                continue
            if isinstance(call, GenerateCall):
                self._submit(identity, call)
            else:  # control calls may wait for the current step: never block receiving on them
                task = asyncio.create_task(self._control(identity, call))
                self._control_tasks.add(task)
                task.add_done_callback(self._control_tasks.discard)

    def _submit(self, identity: bytes, call: GenerateCall) -> None:
        key = (identity, call.request_id)
        try:
            future = self.engine.submit(key, call.request, call.timeout_s)
        except BadRequest as exc:
            code = "duplicate" if isinstance(exc, DuplicateRequest) else "bad_request"
            return self._send(identity, ErrorReply(request_id=call.request_id, code=code, message=str(exc)))
        future.add_done_callback(lambda done: self._answer(identity, call.request_id, done))

    def _answer(self, identity: bytes, request_id: str, done: asyncio.Future) -> None:
        if done.cancelled():
            return
        if isinstance(done.exception(), GenerationError):
            return self._send(
                identity, ErrorReply(request_id=request_id, code="internal", message=str(done.exception()))
            )
        result, retry = done.result()
        self._send(identity, GenerateReply(request_id=request_id, result=result, retry=retry))

    # ---- control calls --------------------------------------------------------------------------------------------
    async def _control(self, identity: bytes, call) -> None:
        try:
            reply = await self._handle_control(identity, call)
        except ValueError as exc:
            reply = ErrorReply(request_id=call.request_id, code="bad_request", message=str(exc))
        except Exception as exc:
            reply = ErrorReply(request_id=call.request_id, code="internal", message=repr(exc))
        self._send(identity, reply)
        if isinstance(call, ShutdownCall):
            self._stop.set()

    async def _handle_control(self, identity: bytes, call):
        engine = self.engine
        version = engine.weight_version
        if isinstance(call, AbortCall):
            keys = engine.running_keys() if call.all else [(identity, t) for t in call.targets]
            ended = sum(engine.end(key, "abort") for key in keys)
            return AckReply(request_id=call.request_id, weight_version=version, affected=ended)
        if isinstance(call, PauseCall):
            ended = await engine.pause(abort=call.mode == "abort")
            return AckReply(request_id=call.request_id, weight_version=version, affected=ended)
        if isinstance(call, ResumeCall):
            engine.resume()
            return AckReply(request_id=call.request_id, weight_version=version)
        if isinstance(call, UpdateWeightsCall):
            return await self._update_weights(call)
        if isinstance(call, StatsCall):
            return self.stats(call.request_id)
        if isinstance(call, ShutdownCall):
            return AckReply(request_id=call.request_id, weight_version=version)
        raise ValueError(f"unknown call {type(call).__name__}")

    async def _update_weights(self, call: UpdateWeightsCall) -> AckReply:
        if (call.path is None) == (call.tensors is None):
            raise ValueError("update_weights needs exactly one of path and tensors")
        if call.tensors is not None:
            tensors = unpack_tensors(call.tensors)

            def load(model):
                return load_tensors_into(model, tensors)
        else:

            def load(model):
                return load_directory_into(model, call.path)

        version, running = await self.engine.update_weights(load, call.version, call.in_flight)
        return AckReply(request_id=call.request_id, weight_version=version, affected=running)

    def stats(self, request_id: str | None) -> ServiceStats:
        s = self.engine.stats()
        return ServiceStats(
            request_id=request_id,
            weight_version=s.weight_version,
            paused=self.engine.paused,
            running=self.engine.running,
            waiting=self.engine.waiting,
            steps=self.engine.batcher.steps,
            tokens_generated=s.tokens_generated,
            requests_finished=s.requests_finished,
            errors_replied=self.errors_replied,
            busy_seconds=s.busy_seconds,
            max_running=self.config.max_running,
            prefill_tokens=s.prefill_tokens,
            reused_tokens=s.reused_tokens,
            shared_prefill_tokens=s.shared_prefill_tokens,
            prefix_lookups=s.prefix_lookups,
            prefix_hits=s.prefix_hits,
        )


def run_service(config: ServiceConfig) -> None:
    """Load the model and serve until a shutdown call (the body of the service process)."""
    from turnrl.models.loading import load_policy

    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    model, tokenizer = load_policy(config.model_path, device=config.device)
    asyncio.run(GenerationService(config, model, tokenizer.pad_token_id).serve())


def run_service_from_json(config_json: bytes) -> None:
    run_service(msgspec.json.decode(config_json, type=ServiceConfig, strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="turnrl generation service (ZeroMQ ROUTER)")
    parser.add_argument("--config", required=True, help='ServiceConfig as JSON, e.g. \'{"model_path": "..."}\'')
    run_service_from_json(parser.parse_args(argv).config.encode())


if __name__ == "__main__":
    main()
