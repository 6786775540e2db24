"""A generator that can be paused while the weights it serves are changed in place.

Invariant: between ``await pause()`` returning and ``resume()``, no request of this wrapper is being
served (every call that had started has returned; new calls wait), so an in-process learner may
update the shared model without a generation reading half-updated weights. Otherwise it is the
wrapped ``Generator``, unchanged.
"""

from __future__ import annotations

import asyncio

from turnrl.engine.generation.base import Generator
from turnrl.protocol import GenerateRequest, GenerateResult


class PausableGenerator(Generator):
    def __init__(self, inner: Generator):
        self.inner = inner
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0

    @property
    def weight_version(self) -> int:
        return self.inner.weight_version

    async def generate(self, request: GenerateRequest) -> GenerateResult:
        while not self._open.is_set():
            await self._open.wait()
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self.inner.generate(request)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def pause(self) -> None:
        self._open.clear()
        await self._idle.wait()

    def resume(self) -> None:
        self._open.set()

    async def end_session(self, session_id: str) -> None:
        await self.inner.end_session(session_id)

    async def close(self) -> None:
        await self.inner.close()
