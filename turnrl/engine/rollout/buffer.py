"""TrajectoryBuffer: batches of trajectories between rollout and learner, under a staleness bound eta.

The unit is a batch (one training step's episodes: GRPO needs whole groups). Admission control
(AReaL's, counted in batches): batch ``i`` (numbered from the starting version) may start generating only when
``i <= version + eta``, where ``version`` is the number of updates the learner has applied, so its
tokens are generated under a version ``>= i - eta``; the learner consumes batch ``i`` at version ``i``.

Invariants:
- every token the learner gets was generated at most ``eta`` versions before the weights it trains:
  admission makes it so, and consumption checks it again on every token's recorded version (a
  trajectory that breaks the bound is dropped and counted in ``stale_dropped``, never trained on);
- batches are consumed in admission order, each exactly once;
- eta = 0 is on-policy and synchronous: batch ``i`` starts only after update ``i`` - 1 was applied.
"""

from __future__ import annotations

import asyncio

import msgspec

from turnrl.protocol import Trajectory


class Ticket(msgspec.Struct, frozen=True):
    index: int  # the batch's position in consumption order
    version: int  # the learner version when the batch was admitted


def staleness(trajectory: Trajectory, version: int) -> int:
    """Versions between the oldest policy token of ``trajectory`` and ``version`` (0 without tokens)."""
    sampled = [v for v, m in zip(trajectory.versions, trajectory.loss_mask, strict=True) if m]
    return version - min(sampled) if sampled else 0


class TrajectoryBuffer:
    def __init__(self, eta: int = 0, version: int = 0):
        """``version``: the learner's version now (a resumed run starts where it stopped)."""
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        if version < 0:
            raise ValueError(f"version must be >= 0, got {version}")
        self.eta = eta
        self.version = version
        self.admitted = version  # batch indices count from the first version, like the learner's updates
        self.consumed = version
        self.stale_dropped = 0
        self._ready: dict[int, list[Trajectory]] = {}
        self._changed = asyncio.Condition()

    def can_admit(self) -> bool:
        return self.admitted <= self.version + self.eta

    async def admit(self) -> Ticket:
        """Wait until the next batch may start; it must then be generated and ``put``."""
        async with self._changed:
            await self._changed.wait_for(self.can_admit)
            ticket = Ticket(self.admitted, self.version)
            self.admitted += 1
            return ticket

    async def put(self, ticket: Ticket, trajectories: list[Trajectory]) -> None:
        if not 0 <= ticket.index < self.admitted or ticket.index < self.consumed or ticket.index in self._ready:
            raise ValueError(f"ticket {ticket.index} was not admitted or was already put")
        async with self._changed:
            self._ready[ticket.index] = list(trajectories)
            self._changed.notify_all()

    async def get(self) -> list[Trajectory]:
        """The next batch in admission order, without trajectories older than the bound allows."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.consumed in self._ready)
            batch = self._ready.pop(self.consumed)
            self.consumed += 1
        fresh = [t for t in batch if staleness(t, self.version) <= self.eta]
        self.stale_dropped += len(batch) - len(fresh)
        return fresh

    async def advance(self) -> int:
        """The learner applied an update (and the generator serves the new weights)."""
        async with self._changed:
            self.version += 1
            self._changed.notify_all()
            return self.version
