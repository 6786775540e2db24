"""Env transport: ZeroMQ env worker processes.

Invariant: a leaf: imports nothing heavier than msgspec; a struct is validated when built (a bad value raises
``ValueError`` naming its key).
"""

from __future__ import annotations

import msgspec


class EnvWorkerConfig(msgspec.Struct, frozen=True, kw_only=True):
    workers: int = 2
    threads_per_worker: int = 64
    heartbeat_s: float = 0.2
    heartbeat_timeout_s: float = 3.0
    start_timeout_s: float = 60.0
    plugins: tuple[str, ...] = ()  # modules a worker imports first (they register env families)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be >= 1, got {self.threads_per_worker}")
        if not 0 < self.heartbeat_s < self.heartbeat_timeout_s:
            raise ValueError(
                f"need 0 < heartbeat_s < heartbeat_timeout_s, got {self.heartbeat_s}, {self.heartbeat_timeout_s}"
            )
