"""The fixed agentic workload and its latency models: an env and a continuous-batching generator.

Invariants:
- the workload is a pure function of its seed: episode i lasts ``turns[i]`` turns, turn t of
  episode i generates ``tokens[i, t]`` tokens and its env step takes ``latency_s[i, t]`` seconds,
  whatever the order in which the engine runs them (so async and lock-step runs do the same work);
- ``LatencyModelGenerator`` behaves like a GPU server with continuous batching: a decode step costs
  ``step_base_s + step_per_seq_s * running`` and advances every running sequence by one token; a
  request that arrives while a step runs joins at the next step, a finished one leaves; at most
  ``max_running`` sequences run, the rest wait in arrival order. Its clock is absolute (a late wake
  of the event loop does not stretch the model's time), and ``time_scale`` shrinks every latency;
- with zero step costs it answers at once: the engine's own overhead is then all that is left;
- every token carries the version of the decode step that sampled it: ``bump_version`` takes effect after the
  step in progress (as a weight update applied between two decode steps), and ``hold(seconds)`` delays the next
  step as a weight load would.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections import deque
from collections.abc import Callable

import msgspec
import numpy as np

from turnrl.engine.generation.base import Generator, GeneratorStats
from turnrl.envs.base import BlockingEnv
from turnrl.protocol import EnvResult, GenerateRequest, GenerateResult

_Z99 = 2.3263478740408408  # standard normal quantile at 0.99


class WorkloadConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Workload (b) of the rollout benchmark; the defaults are the fixed workload (do not tune)."""

    episodes: int = 2048
    slots: int = 256
    max_turns: int = 8
    tokens_median: float = 64.0
    tokens_p99: float = 512.0
    tokens_cap: int = 512
    env_median_s: float = 0.020
    env_p99_s: float = 2.0
    env_cap_s: float = 10.0
    step_base_s: float = 0.010
    step_per_seq_s: float = 0.00004
    max_running: int = 256
    time_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("episodes", "slots", "max_turns", "tokens_cap", "max_running"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {self.time_scale}")
        if not (0 < self.tokens_median <= self.tokens_p99 and 0 < self.env_median_s <= self.env_p99_s):
            raise ValueError("medians must be positive and not above their p99")


def _lognormal(rng: np.random.Generator, median: float, p99: float, cap: float, shape) -> np.ndarray:
    sigma = math.log(p99 / median) / _Z99
    return np.minimum(rng.lognormal(math.log(median), sigma, size=shape), cap)


class Workload:
    """The drawn plan: turns per episode, tokens per turn, env latency per turn (unscaled)."""

    def __init__(self, config: WorkloadConfig):
        self.config = config
        rng = np.random.default_rng(config.seed)
        n, t = config.episodes, config.max_turns
        self.turns = rng.integers(1, t + 1, size=n)
        self.tokens = np.maximum(
            1, _lognormal(rng, config.tokens_median, config.tokens_p99, config.tokens_cap, (n, t)).astype(np.int64)
        )
        self.latency_s = _lognormal(rng, config.env_median_s, config.env_p99_s, config.env_cap_s, (n, t))

    @property
    def total_tokens(self) -> int:
        return int(sum(self.tokens[i, : self.turns[i]].sum() for i in range(self.config.episodes)))

    @property
    def total_steps(self) -> int:
        return int(self.turns.sum())

    def step_cost_s(self, running: int) -> float:
        c = self.config
        return (c.step_base_s + c.step_per_seq_s * running) * c.time_scale

    def ideal_seconds(self) -> float:
        """All decode work at the best batch (the most tokens per second), no waiting."""
        best = max(range(1, self.config.max_running + 1), key=lambda b: b / self.step_cost_s(b))
        return self.total_tokens * self.step_cost_s(best) / best

    def tokens_for(self, request: GenerateRequest) -> int:
        """Tokens the policy writes for this request: episode and turn are read from the runner's ids."""
        item = int(request.session_id.split("-")[1])
        turn = int(request.request_id.rsplit("-", 1)[1])
        return int(self.tokens[item, turn])


class SyntheticEnv(BlockingEnv):
    """An env that only waits: episode ``item_id`` ends after ``turns[item_id]`` steps."""

    family = "synthetic"
    system_prompt = "synthetic"

    def __init__(self, workload: Workload, zero_latency: bool = False):
        self.workload = workload
        self.zero_latency = zero_latency
        self._item = -1
        self._turn = 0

    def reset_sync(self, item_id: int) -> str:
        if not 0 <= item_id < self.workload.config.episodes:
            raise ValueError(f"item_id must be in [0, {self.workload.config.episodes}), got {item_id}")
        self._item, self._turn = item_id, 0
        return f"episode {item_id}"

    def _latency(self) -> float:
        if self.zero_latency:
            return 0.0
        return float(self.workload.latency_s[self._item, self._turn]) * self.workload.config.time_scale

    def _advance(self) -> EnvResult:
        self._turn += 1
        done = self._turn >= self.workload.turns[self._item]
        return EnvResult(observation="ok", reward=1.0 if done else 0.0, done=bool(done))

    def step_sync(self, action_text: str) -> EnvResult:
        time.sleep(self._latency())
        return self._advance()

    async def step(self, action_text: str) -> EnvResult:
        delay = self._latency()
        if delay > 0:
            await asyncio.sleep(delay)
        return self._advance()


class _Sequence:
    __slots__ = ("future", "remaining", "request")

    def __init__(self, request: GenerateRequest, remaining: int, future: asyncio.Future):
        self.request, self.remaining, self.future = request, remaining, future


class LatencyModelGenerator(Generator):
    """A continuous-batching server simulated in real time (see the module invariants)."""

    def __init__(
        self,
        workload: Workload,
        tokens_of: Callable[[GenerateRequest], int] | None = None,
        zero_cost: bool = False,
        token_id: int = 5,
    ):
        self.workload = workload
        self.tokens_of = tokens_of or workload.tokens_for
        self.zero_cost = zero_cost
        self.token_id = token_id
        self._version = 0
        self._version_steps: list[tuple[int, int]] = []  # (decode steps done when it took effect, version)
        self._ready_at = 0.0  # the loop time before which no decode step starts (a weight load)
        self._in_step = False  # a decode step is in progress (its time is passing)
        self._waiting: deque[_Sequence] = deque()
        self._running: list[tuple[int, int, _Sequence]] = []  # heap of (finish step, tie, sequence)
        self._tie = 0
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self.steps = 0
        self.busy_s = 0.0
        self.running_sum = 0
        self.tokens = 0
        self.max_running_seen = 0

    @property
    def weight_version(self) -> int:
        return self._version

    def bump_version(self) -> int:
        self._version += 1
        self._version_steps.append((self.steps + self._in_step, self._version))
        return self._version

    def hold(self, seconds: float) -> None:
        """No decode step starts in the next ``seconds`` (model time, already scaled)."""
        self._ready_at = max(self._ready_at, asyncio.get_running_loop().time() + seconds)

    def _version_at(self, step: int) -> int:
        """The version that sampled decode step ``step`` (1-based)."""
        version = 0
        for done, v in self._version_steps:
            if done < step:
                version = v
        return version

    def _result(self, seq: _Sequence, n: int) -> GenerateResult:
        stop = seq.request.sampling.max_new_tokens > n
        if self.zero_cost or not self._version_steps:
            versions = [self._version] * n
        else:  # the sequence's tokens came from the last n decode steps
            versions = [self._version_at(self.steps - n + 1 + j) for j in range(n)]
        return GenerateResult(
            request_id=seq.request.request_id,
            output_ids=[self.token_id] * n,
            logprobs=[0.0] * n,
            versions=versions,
            finish_reason="stop" if stop else "length",
        )

    async def generate(self, request: GenerateRequest) -> GenerateResult:
        n = max(1, min(self.tokens_of(request), request.sampling.max_new_tokens))
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        seq = _Sequence(request, n, future)
        if self.zero_cost:
            self.tokens += n
            return self._result(seq, n)
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._serve())
        self._waiting.append(seq)
        self._wake.set()
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        max_running = self.workload.config.max_running
        clock = loop.time()
        while True:
            if not self._running and not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                clock = loop.time()  # an idle server starts its next step now
            while self._waiting and len(self._running) < max_running:
                seq = self._waiting.popleft()
                self._tie += 1
                heapq.heappush(self._running, (self.steps + seq.remaining, self._tie, seq))
            running = len(self._running)
            cost = self.workload.step_cost_s(running)
            clock = max(clock, self._ready_at) + cost
            delay = clock - loop.time()
            self._in_step = True
            await asyncio.sleep(max(delay, 0.0))  # behind the model's clock: catch up, but let others run
            self._in_step = False
            self.steps += 1
            self.busy_s += cost
            self.running_sum += running
            self.tokens += running
            self.max_running_seen = max(self.max_running_seen, running)
            while self._running and self._running[0][0] <= self.steps:
                _, _, seq = heapq.heappop(self._running)
                if not seq.future.done():
                    seq.future.set_result(self._result(seq, seq.remaining))

    @property
    def mean_running_batch(self) -> float:
        return self.running_sum / self.steps if self.steps else 0.0

    async def stats(self) -> GeneratorStats:
        return GeneratorStats(weight_version=self._version, tokens_generated=self.tokens, busy_seconds=self.busy_s)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        for seq in [*self._waiting, *(s for _, _, s in self._running)]:
            if not seq.future.done():
                seq.future.cancel()
        self._waiting.clear()
        self._running.clear()
