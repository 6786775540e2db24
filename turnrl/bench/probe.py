"""What a rollout benchmark measures, recorded as it happens: wrappers around a generator, its envs and their pool.

Invariants:
- the wrappers change nothing the episode sees: every call goes to the wrapped object with the same arguments
  and its answer (or exception) comes back unchanged; they only note times on one ``Probe``;
- a turn's latency is the wall time from the env's previous answer (its reset or last step) to this step's answer,
  so it holds generation, the env step and any waiting in between (in lock-step: the barriers); generation and
  env times are the calls' own durations;
- figures come from the probe, not from finished trajectories, so a run cut short by a time limit still reports
  what it did.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from turnrl.engine.generation.base import Generator, GeneratorStats
from turnrl.engine.rollout.run import EnvPool
from turnrl.envs.base import Env
from turnrl.protocol import EnvResult, GenerateRequest, GenerateResult


class Probe:
    """Times and counts of one run, on one monotonic clock starting at construction."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.t0 = clock()
        self.generation_s: list[float] = []
        self.env_s: list[float] = []
        self.turn_s: list[float] = []
        self.step_times: list[float] = []  # when each env step answered, seconds since t0
        self.episode_events: list[tuple[float, int]] = []  # (time, +1 started / -1 ended)
        self.reset_items: list[int] = []
        self.tokens = 0
        self.outstanding = 0  # generate calls not yet answered
        self.busy_s = 0.0  # time with at least one generate call outstanding
        self.request_seconds = 0.0  # integral of outstanding calls over time
        self._last_change = self.t0

    def restart(self) -> None:
        """Start the clock now (call right before the run; nothing recorded yet)."""
        self.t0 = self._last_change = self.clock()

    def now(self) -> float:
        return self.clock() - self.t0

    def _account(self) -> None:
        t = self.clock()
        if self.outstanding:
            self.busy_s += t - self._last_change
            self.request_seconds += self.outstanding * (t - self._last_change)
        self._last_change = t

    def generation_started(self) -> None:
        self._account()
        self.outstanding += 1

    def generation_ended(self, seconds: float, tokens: int) -> None:
        self._account()
        self.outstanding -= 1
        self.generation_s.append(seconds)
        self.tokens += tokens

    def finish(self) -> None:
        self._account()


class ProbedGenerator(Generator):
    """Delegates to ``inner``; notes each generate call's duration and tokens."""

    def __init__(self, inner: Generator, probe: Probe):
        self.inner = inner
        self.probe = probe

    @property
    def weight_version(self) -> int:
        return self.inner.weight_version

    async def generate(self, request: GenerateRequest) -> GenerateResult:
        probe = self.probe
        start = probe.clock()
        probe.generation_started()
        tokens = 0
        try:
            result = await self.inner.generate(request)
            tokens = len(result.output_ids)
            return result
        finally:
            probe.generation_ended(probe.clock() - start, tokens)

    async def stats(self) -> GeneratorStats:
        return await self.inner.stats()

    async def end_session(self, session_id: str) -> None:
        await self.inner.end_session(session_id)

    async def close(self) -> None:
        await self.inner.close()


class ProbedEnv(Env):
    """Delegates to ``inner``; notes resets (item ids), step durations and turn latencies."""

    def __init__(self, inner: Env, probe: Probe):
        self.inner = inner
        self.probe = probe
        self.family = inner.family
        self.system_prompt = inner.system_prompt
        self._last_answer = 0.0

    async def reset(self, item_id: int) -> str:
        observation = await self.inner.reset(item_id)
        self.probe.reset_items.append(int(item_id))
        self._last_answer = self.probe.clock()
        return observation

    async def step(self, action_text: str) -> EnvResult:
        probe = self.probe
        start = probe.clock()
        result = await self.inner.step(action_text)
        end = probe.clock()
        probe.env_s.append(end - start)
        probe.turn_s.append(end - self._last_answer)
        probe.step_times.append(end - probe.t0)
        self._last_answer = end
        return result

    async def valid_actions(self) -> list[str] | None:
        return await self.inner.valid_actions()

    def format_reply(self, action: str) -> str:
        return self.inner.format_reply(action)

    async def close(self) -> None:
        await self.inner.close()


class ProbedEnvPool(EnvPool):
    """An ``EnvPool`` whose envs are probed and whose acquire/release mark an episode's start and end."""

    def __init__(self, factory: Callable[[], Env], probe: Probe):
        super().__init__(lambda: ProbedEnv(factory(), probe))
        self.probe = probe

    def acquire(self) -> Env:
        env = super().acquire()
        self.probe.episode_events.append((self.probe.now(), 1))
        return env

    async def release(self, env: Env, healthy: bool) -> None:
        self.probe.episode_events.append((self.probe.now(), -1))
        await super().release(env, healthy)
