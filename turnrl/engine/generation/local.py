"""The generation engine in this process, sharing the learner's model object (the CPU default).

Invariants: those of ``GenerationEngine`` (continuous batching, per-session prefix reuse, a group's shared prompt
prefilled once); the model is the learner's own, so ``push_weights`` only bumps the version (callers change the
weights while generation is paused, see ``PausableGenerator``); the sampling RNG is this process's and is saved
and restored exactly.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import torch

from turnrl.engine.generation.base import Generator, GeneratorStats
from turnrl.engine.generation.engine import GenerationEngine
from turnrl.errors import GenerationError, GenerationTimeout
from turnrl.protocol import GenerateRequest, GenerateResult


class LocalGenerator(Generator):
    def __init__(
        self,
        model,
        pad_token_id: int,
        max_batch: int = 256,
        seed: int = 0,
        use_thread: bool = True,
        kv_cache_tokens: int = 2_000_000,
        weight_version: int = 0,
        max_resubmits: int = 8,
    ):
        self.model = model
        self.engine = GenerationEngine(
            model,
            pad_token_id,
            max_running=max_batch,
            seed=seed,
            kv_cache_tokens=kv_cache_tokens,
            weight_version=weight_version,
            use_thread=use_thread,
        )
        self.max_resubmits = max_resubmits
        self._keys = itertools.count()

    @property
    def weight_version(self) -> int:
        return self.engine.weight_version

    @property
    def busy_seconds(self) -> float:
        return self.engine.busy_seconds

    @property
    def kv_store(self):
        return self.engine.batcher.store

    def bump_version(self) -> int:
        """Call after the shared model's weights changed: cached keys/values are stale from now on."""
        return self.engine.bump_version()

    async def push_weights(self, model, tokenizer, staging_dir: Path) -> int:
        if model is not self.model:
            raise ValueError("LocalGenerator serves the learner's own model object; push_weights got another one")
        return self.bump_version()

    def rng_state(self) -> torch.Tensor:
        return self.engine.rng.get_state()

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        if state is not None:
            self.engine.rng.set_state(state)

    async def generate(self, request: GenerateRequest, timeout_s: float | None = None) -> GenerateResult:
        for _ in range(self.max_resubmits + 1):
            key = next(self._keys)
            try:
                result, retry = await self.engine.submit(key, request, timeout_s)
            except asyncio.CancelledError:  # the caller gave up (e.g. its episode's deadline): stop decoding it
                self.engine.end(key, "abort")
                raise
            if retry:  # aborted by a weight update under the abort policy: the request runs again
                continue
            if result.finish_reason == "timeout":
                raise GenerationTimeout(result)
            return result
        raise GenerationError(f"request {request.request_id!r} aborted by {self.max_resubmits + 1} weight updates")

    async def stats(self) -> GeneratorStats:
        return self.engine.stats()

    async def end_session(self, session_id: str) -> None:
        self.engine.end_session(session_id)

    async def close(self) -> None:
        await self.engine.close()
