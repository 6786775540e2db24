"""Live environments behind integer ids: capped, locked per env, reaped when idle.

Invariant: at most ``max_envs`` envs exist at any moment (a create beyond that is
refused with ``EnvTableFull`` before any env is built); an id is never reused; every
env leaves the pool through ``close`` (by the client, by the idle reaper, or at
shutdown) and is closed exactly once; calls on one env run one at a time, in a
worker thread, so a slow env never stalls the event loop or the other envs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from turnrl.envs.base import BlockingEnv
from turnrl.errors import EnvTableFull, UnknownEnv

# AgentGym-RL's published configs open up to 32 x 8 = 256 clients per server at once.
DEFAULT_MAX_ENVS = 256
# longer than AgentGym-RL's client timeout (2400 s), so no env is reaped under a client that still waits
DEFAULT_IDLE_TIMEOUT_S = 3600.0


@dataclass
class Slot:
    env: BlockingEnv
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    observation: str = ""
    reward: float = 0.0
    score: float = 0.0
    done: bool = False
    started: bool = False


class EnvTable:
    def __init__(
        self,
        factory: Callable[[], BlockingEnv],
        max_envs: int = DEFAULT_MAX_ENVS,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ):
        if max_envs < 1:
            raise ValueError(f"max_envs must be >= 1, got {max_envs}")
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be > 0, got {idle_timeout_s}")
        self.factory = factory
        self.max_envs = max_envs
        self.idle_timeout_s = idle_timeout_s
        self._slots: dict[int, Slot] = {}
        self._reserved = 0  # creates in flight: counted against the cap
        self._ids = itertools.count()
        self.reaped = 0

    def __len__(self) -> int:
        return len(self._slots)

    async def create(self) -> int:
        if len(self._slots) + self._reserved >= self.max_envs:
            raise EnvTableFull(f"{self.max_envs} envs are live (the cap); close one first")
        self._reserved += 1
        try:
            env = await asyncio.to_thread(self.factory)
        finally:
            self._reserved -= 1
        env_id = next(self._ids)
        self._slots[env_id] = Slot(env)
        return env_id

    def slot(self, env_id: int) -> Slot:
        try:
            return self._slots[env_id]
        except KeyError:
            raise UnknownEnv(env_id) from None

    async def call(self, env_id: int, fn: Callable[[Slot], object]) -> object:
        """Run ``fn(slot)`` in a worker thread, holding the env's lock."""
        slot = self.slot(env_id)
        async with slot.lock:
            if self._slots.get(env_id) is not slot:  # closed while we waited
                raise UnknownEnv(env_id)
            slot.last_used = time.monotonic()
            try:
                return await asyncio.to_thread(fn, slot)
            finally:
                slot.last_used = time.monotonic()

    async def close(self, env_id: int) -> None:
        slot = self.slot(env_id)
        async with slot.lock:
            if self._slots.pop(env_id, None) is slot:
                await asyncio.to_thread(slot.env.close_sync)

    async def reap_idle(self) -> int:
        """Close envs idle for longer than the timeout (not those in a call); returns how many."""
        now = time.monotonic()
        stale = [i for i, s in self._slots.items() if not s.lock.locked() and now - s.last_used > self.idle_timeout_s]
        for env_id in stale:
            with contextlib.suppress(UnknownEnv):
                await self.close(env_id)
                self.reaped += 1
        return len(stale)

    async def reaper(self) -> None:
        """Reap forever, a few times per timeout (run as a background task)."""
        while True:
            await asyncio.sleep(min(self.idle_timeout_s / 4, 5.0))
            await self.reap_idle()

    async def close_all(self) -> None:
        for env_id in list(self._slots):
            with contextlib.suppress(UnknownEnv):
                await self.close(env_id)
