"""The generation engine: continuous batching over one model, scheduled by an asyncio task.

In process (``LocalGenerator``) and behind ZeroMQ (``GenerationService``) it is this same engine.

Invariants:
- every submitted request is answered exactly once through its future: ``(result, retry)`` with the sampled ids,
  their log-probs, the weight version of every token and why it ended (stop, length, abort, timeout), or a
  ``GenerationError`` when the forward it was in failed (that batch is lost, the engine is not); a bad request
  raises ``BadRequest`` at ``submit`` and is never queued;
- requests arrive at any time and join the running batch at the next step; a timeout or an abort ends only that
  request and returns the tokens sampled until then; the model is touched only by ``step`` calls, one at a time,
  in a worker thread (or inline with ``use_thread=False``);
- a weight update waits for the current step, loads the weights, then bumps the version; requests running across
  it either continue (re-prefilled on their whole context under the new weights, versions recorded per token) or
  end with ``abort`` and ``retry=True``, per the engine's ``in_flight`` policy or the call's own;
- paused, no step decodes or admits (aborts and timeouts still end requests).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Hashable

import torch

from turnrl.engine.generation.base import GeneratorStats
from turnrl.engine.generation.batcher import ContinuousBatcher, Sequence
from turnrl.engine.generation.kv_store import KVStore
from turnrl.errors import BadRequest, DuplicateRequest, GenerationError
from turnrl.protocol import GenerateRequest, GenerateResult, InFlightPolicy

Answer = tuple[GenerateResult, bool]  # the result, and whether the same request may be sent again


class GenerationEngine:
    def __init__(
        self,
        model,
        pad_token_id: int,
        *,
        max_running: int = 64,
        seed: int = 0,
        kv_cache_tokens: int = 2_000_000,
        weight_version: int = 0,
        default_timeout_s: float | None = None,
        in_flight: InFlightPolicy = "continue",
        use_thread: bool = True,
    ):
        if max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        if kv_cache_tokens < 0:
            raise ValueError(f"kv_cache_tokens must be >= 0, got {kv_cache_tokens}")
        self.model = model
        self.max_running = max_running
        self.default_timeout_s = default_timeout_s
        self.in_flight = in_flight
        self.use_thread = use_thread
        self.vocab_size = model.get_input_embeddings().weight.shape[0]
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        device = next(model.parameters()).device
        self.rng = torch.Generator(device=device).manual_seed(seed)
        self.batcher = ContinuousBatcher(
            model, pad_token_id, self.rng, KVStore(kv_cache_tokens) if kv_cache_tokens else None
        )
        self.batcher.version = weight_version
        self._active: dict[Hashable, tuple[Sequence, asyncio.Future]] = {}
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._cancel: dict[Hashable, str] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._paused = False
        self._rebuild = False  # the version was bumped with rows running: re-prefill them first
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._model_lock: asyncio.Lock | None = None
        self.requests_finished = 0
        self.busy_seconds = 0.0

    @property
    def weight_version(self) -> int:
        return self.batcher.version

    @property
    def paused(self) -> bool:
        return self._paused

    # ---- requests -------------------------------------------------------------------------------------------------
    def validate(self, request: GenerateRequest, timeout_s: float | None = None) -> None:
        if not request.input_ids:
            raise BadRequest("input_ids must not be empty")
        for name, ids in [
            ("input_ids", request.input_ids),
            ("stop_token_ids", request.sampling.stop_token_ids),
            *[("allowed", c) for c in (request.allowed or [])],
        ]:
            if any(t < 0 or t >= self.vocab_size for t in ids):
                raise BadRequest(f"{name} holds a token id outside [0, {self.vocab_size})")
        if request.allowed is not None and (not request.allowed or any(len(c) == 0 for c in request.allowed)):
            raise BadRequest("allowed must hold at least one completion, none of them empty")
        sampling = request.sampling
        if sampling.max_new_tokens < 1:
            raise BadRequest(f"sampling.max_new_tokens must be >= 1, got {sampling.max_new_tokens}")
        if sampling.temperature < 0 or not 0 < sampling.top_p <= 1:
            raise BadRequest(
                f"sampling: temperature must be >= 0 and top_p in (0, 1], got {sampling.temperature}, {sampling.top_p}"
            )
        if timeout_s is not None and timeout_s <= 0:
            raise BadRequest(f"timeout_s must be > 0, got {timeout_s}")
        longest = max([sampling.max_new_tokens, *map(len, request.allowed or [])])
        if self.max_positions is not None and len(request.input_ids) + longest > self.max_positions:
            raise BadRequest(
                f"input_ids ({len(request.input_ids)}) + max_new_tokens ({longest}) exceed the "
                f"model's {self.max_positions} positions"
            )

    def submit(self, key: Hashable, request: GenerateRequest, timeout_s: float | None = None) -> asyncio.Future:
        """Queue a request; its future resolves to ``(result, retry)``. ``key`` must be unique among running ones."""
        if key in self._active:
            raise DuplicateRequest(f"request {request.request_id!r} is already running")
        self.validate(request, timeout_s)
        loop = self._ensure_running()
        future = loop.create_future()
        seq = Sequence(key=key, request=request)
        self._active[key] = (seq, future)
        self._waiting.append(seq)
        timeout = timeout_s if timeout_s is not None else self.default_timeout_s
        if timeout is not None:
            self._timers[key] = loop.call_later(timeout, self.end, key, "timeout")
        self._wake.set()
        return future

    def end(self, key: Hashable, reason: str) -> bool:
        """End a request early (abort/timeout): at once if it waits, at the next step boundary if it runs."""
        if key not in self._active:
            return False
        seq, _ = self._active[key]
        if seq in self._waiting:
            self._waiting.remove(seq)
            seq.finish = reason
            self._finish([seq])
        else:
            self._cancel[key] = reason
            self._wake.set()
        return True

    def running_keys(self) -> list[Hashable]:
        return list(self._active)

    # ---- control --------------------------------------------------------------------------------------------------
    async def pause(self, abort: bool = False) -> int:
        """Stop admitting and decoding; returns once no step runs. ``abort`` ends every request (``abort``)."""
        self._ensure_running()
        self._paused = True
        ended = sum(self.end(key, "abort") for key in list(self._active)) if abort else 0
        async with self._model_lock:
            pass
        self._wake.set()  # let the engine apply the aborts while paused
        return ended

    def resume(self) -> None:
        self._paused = False
        if self._wake is not None:
            self._wake.set()

    async def update_weights(
        self,
        load: Callable[[torch.nn.Module], object] | None,
        version: int | None = None,
        in_flight: InFlightPolicy | None = None,
    ) -> tuple[int, int]:
        """Run ``load(model)`` between steps (``None``: the weights already changed in place), then bump the
        version. Returns (new version, requests that were running)."""
        if version is not None and version <= self.batcher.version:
            raise ValueError(f"version must exceed the current {self.batcher.version}, got {version}")
        self._ensure_running()
        async with self._model_lock:
            if load is not None:
                await self._call(load, self.model)
            self.batcher.set_version(version if version is not None else self.batcher.version + 1)
            running = self.batcher.reset()  # their caches hold keys/values of the old weights
            if (in_flight or self.in_flight) == "continue":
                self._waiting.extendleft(reversed(running))
            else:
                for seq in running:
                    seq.finish = "abort"
                self._finish(running, retry=True)
            self._wake.set()
            return self.batcher.version, len(running)

    def bump_version(self) -> int:
        """The shared model's weights were changed in place while paused: tokens from now on carry a new version."""
        self.batcher.set_version(self.batcher.version + 1)
        if self.batcher.rows:
            self._rebuild = True
            if self._wake is not None:
                self._wake.set()
        return self.batcher.version

    def stats(self) -> GeneratorStats:
        b = self.batcher
        return GeneratorStats(
            weight_version=b.version,
            requests_finished=self.requests_finished,
            tokens_generated=b.tokens,
            busy_seconds=self.busy_seconds,
            prefill_tokens=b.prefill_tokens,
            reused_tokens=b.reused_tokens,
            shared_prefill_tokens=b.shared_prefill_tokens,
            prefix_lookups=b.prefix_lookups,
            prefix_hits=b.prefix_hits,
        )

    @property
    def running(self) -> int:
        return len(self.batcher.rows)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def end_session(self, session_id: str) -> None:
        if self.batcher.store is not None:
            self.batcher.store.drop(session_id)

    async def close(self) -> None:
        """Stop the engine task; requests still waiting or running fail with ``GenerationError``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._task
            self._task = None
        self._fail([seq for seq, _ in self._active.values()], "the generation engine was closed")
        self._waiting.clear()
        self.batcher.reset()

    # ---- internals ------------------------------------------------------------------------------------------------
    def _ensure_running(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._task is not None and self._task.get_loop() is not loop:  # a new event loop: start afresh
            self._fail([seq for seq, _ in self._active.values()], "the event loop changed")
            self._waiting.clear()
            self.batcher.reset()
            self._task = None
        if self._task is None or self._task.done():
            self._wake, self._model_lock = asyncio.Event(), asyncio.Lock()
            self._task = loop.create_task(self._run())
        return loop

    async def _call(self, fn, *args):
        return await asyncio.to_thread(fn, *args) if self.use_thread else fn(*args)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                seen = -1  # let every coroutine that is ready to submit do so before the batch is cut
                while seen != len(self._waiting):
                    seen = len(self._waiting)
                    await asyncio.sleep(0)
                async with self._model_lock:
                    if self._rebuild:
                        self._rebuild = False
                        self._waiting.extendleft(reversed(self.batcher.reset()))
                    remove, self._cancel = self._cancel, {}
                    admit = []
                    while not self._paused and self._waiting and len(self.batcher.rows) + len(admit) < self.max_running:
                        admit.append(self._waiting.popleft())
                    decode = not self._paused and bool(self.batcher.rows or admit)
                    if not remove and not admit and not decode:
                        break
                    start = time.perf_counter()
                    try:
                        finished = await self._call(self.batcher.step, admit, remove, decode)
                    except Exception as exc:  # the batch is lost, the engine is not
                        self._fail(self.batcher.reset() + admit, f"generation failed: {exc!r}")
                        continue
                    finally:
                        self.busy_seconds += time.perf_counter() - start
                self._finish(finished)

    def _forget(self, key) -> asyncio.Future | None:
        _, future = self._active.pop(key, (None, None))
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._cancel.pop(key, None)
        return future

    def _finish(self, seqs: list[Sequence], retry: bool = False) -> None:
        for seq in seqs:
            future = self._forget(seq.key)
            if future is not None and not future.done():
                self.requests_finished += 1
                future.set_result((seq.result(), retry))

    def _fail(self, seqs: list[Sequence], message: str) -> None:
        for seq in seqs:
            future = self._forget(seq.key)
            if future is not None and not future.done():
                with contextlib.suppress(RuntimeError):  # its loop may be closed
                    future.set_exception(GenerationError(message))
