"""A phase barrier for episodes that must move together (the lock-step baseline).

Invariant: ``arrive`` returns for everyone at once, when every live party has arrived; a party
that ``leave``s (its episode ended) is no longer waited for, and its leaving may release the rest.
"""

from __future__ import annotations

import asyncio


class PhaseBarrier:
    """Releases everyone once every live party has arrived; a finished party leaves for good."""

    def __init__(self, parties: int):
        self.live = parties
        self._arrived = 0
        self._release = asyncio.Event()

    def _maybe_release(self) -> None:
        if self.live and self._arrived >= self.live:
            self._release.set()
            self._release = asyncio.Event()
            self._arrived = 0

    async def arrive(self) -> None:
        release = self._release
        self._arrived += 1
        self._maybe_release()
        await release.wait()

    def leave(self) -> None:
        self.live -= 1
        self._maybe_release()
