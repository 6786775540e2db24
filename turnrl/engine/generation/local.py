"""The generation engine in this process (the CPU default), on the learner's model or on a copy of its own.

Invariants: those of ``GenerationEngine`` (continuous batching, per-session prefix reuse, a group's shared prompt
prefilled once). With ``copy_weights=False`` it samples from the learner's own model object, so that model may
change only while generation is paused (``reads_weights_of`` says so; see ``PausableGenerator``) and
``push_weights`` only bumps the version. With ``copy_weights=True`` it holds its own copy: ``push_weights`` copies
the learner's weights in between two decode steps and generation never stops; requests running across the update
continue under the new weights or are aborted and resumed from their partial output (``in_flight``), so no
request is lost or redone. The sampling RNG is this process's and is saved and restored exactly.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from pathlib import Path

import torch

from turnrl.engine.generation.base import Generator, GeneratorStats
from turnrl.engine.generation.engine import GenerationEngine
from turnrl.engine.generation.partial import generate_resuming
from turnrl.models.weights import load_tensors_into
from turnrl.protocol import GenerateRequest, GenerateResult, InFlightPolicy


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
        copy_weights: bool = False,
        in_flight: InFlightPolicy = "continue",
    ):
        self.model = copy.deepcopy(model).eval() if copy_weights else model
        self.copy_weights = copy_weights
        self.engine = GenerationEngine(
            self.model,
            pad_token_id,
            max_running=max_batch,
            seed=seed,
            kv_cache_tokens=kv_cache_tokens,
            weight_version=weight_version,
            use_thread=use_thread,
            in_flight=in_flight,
        )
        self.max_resubmits = max_resubmits
        self._keys = itertools.count()

    @property
    def weight_version(self) -> int:
        return self.engine.weight_version

    def reads_weights_of(self, model) -> bool:
        return model is self.model

    def bump_version(self) -> int:
        """Call after the shared model's weights changed: cached keys/values are stale from now on."""
        return self.engine.bump_version()

    async def push_weights(self, model, tokenizer, staging_dir: Path) -> int:
        if model is self.model:
            return self.bump_version()
        if not self.copy_weights:
            raise ValueError("this LocalGenerator samples from the learner's own model; push_weights got another one")
        version, _ = await self.engine.update_weights(lambda mine: load_tensors_into(mine, model.state_dict()))
        return version

    def rng_state(self) -> torch.Tensor:
        return self.engine.rng.get_state()

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        if state is not None:
            self.engine.rng.set_state(state)

    async def generate(self, request: GenerateRequest, timeout_s: float | None = None) -> GenerateResult:
        async def send(pending: GenerateRequest):
            key = next(self._keys)
            try:
                return await self.engine.submit(key, pending, timeout_s)
            except asyncio.CancelledError:  # the caller gave up (e.g. its episode's deadline): stop decoding it
                self.engine.end(key, "abort")
                raise

        return await generate_resuming(send, request, self.max_resubmits + 1)

    async def stats(self) -> GeneratorStats:
        return self.engine.stats()

    async def end_session(self, session_id: str) -> None:
        self.engine.end_session(session_id)

    async def close(self) -> None:
        await self.engine.close()
