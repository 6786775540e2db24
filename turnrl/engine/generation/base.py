"""The generator seen by episodes and by the training loop, whatever serves it.

Invariants:
- ``generate`` answers every request exactly once: with a result whose every token carries the weight version
  that sampled it, or by raising; the only exceptions it raises for a request's own failure are
  ``GenerationTimeout`` (the episode ends ``gen_timeout``), ``GenerationError`` (``gen_error``) and ``ValueError``
  for a request it cannot serve at all (bad ids, an unsupported constraint);
- after ``await push_weights(model, ...)`` returns, every generation that starts samples from ``model``'s current
  weights, and ``weight_version`` is one more than before (every kind of generator alike);
- ``rng_state`` is ``None`` for a generator whose sampling RNG cannot be saved (another process's), and such a
  generator ignores ``set_rng_state``; one that returns a state restores exactly it;
- ``stats`` is cumulative since the generator started (callers take differences).

Callers never ask which kind of generator they hold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import msgspec

from turnrl.protocol import GenerateRequest, GenerateResult


class GeneratorStats(msgspec.Struct, kw_only=True):
    """Cumulative figures of a generator (zeros where a kind does not know one)."""

    weight_version: int = 0
    requests_finished: int = 0
    tokens_generated: int = 0
    busy_seconds: float = 0.0  # time the model spent in forward passes
    prefill_tokens: int = 0  # prompt tokens run through the model (after reuse and sharing)
    reused_tokens: int = 0  # prompt tokens whose keys/values came from the session's earlier turns
    shared_prefill_tokens: int = 0  # prompt tokens not recomputed because another request had the same prompt
    prefix_lookups: int = 0  # admitted requests that named a session
    prefix_hits: int = 0  # ... of which reused that session's cache

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hits / self.prefix_lookups if self.prefix_lookups else 0.0


class Generator(ABC):
    @property
    @abstractmethod
    def weight_version(self) -> int: ...

    @abstractmethod
    async def generate(self, request: GenerateRequest) -> GenerateResult: ...

    async def push_weights(self, model, tokenizer, staging_dir: Path) -> int:
        """Serve ``model``'s current weights from now on; returns the new weight version.

        ``staging_dir`` is a directory this generator may write the weights to, for servers that load from disk.
        A generator that serves no trainable model (a scripted or modelled one) refuses."""
        raise NotImplementedError(f"{type(self).__name__} cannot take new weights")

    async def yield_accelerator(self) -> None:  # noqa: B027 - optional hook
        """The learner is about to train: a generator sharing its accelerator frees its memory until the next
        ``push_weights`` (SGLang servers in colocated mode); others do nothing."""

    def reads_weights_of(self, model) -> bool:
        """True when this generator samples from ``model`` itself: then ``model`` may change only while no
        generation runs (see ``PausableGenerator``). A generator with weights of its own returns False."""
        return False

    async def stats(self) -> GeneratorStats:
        return GeneratorStats(weight_version=self.weight_version)

    def rng_state(self):
        return None

    def set_rng_state(self, state) -> None:  # noqa: B027 - optional hook
        """Restore a state from ``rng_state`` (ignored by a generator that cannot save one)."""

    async def end_session(self, session_id: str) -> None:  # noqa: B027 - optional hook
        """The episode is over: cached state for it may be dropped."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the generator holds (sockets, a process it started); safe to call twice."""
