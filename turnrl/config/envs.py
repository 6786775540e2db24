"""Env transport: ZeroMQ env worker processes.

Invariant: a leaf: imports nothing heavier than msgspec; a struct is validated when built (a bad value raises
``ValueError`` naming its key).
"""

from __future__ import annotations

import msgspec


def _check_remote(address: str) -> None:
    host, sep, port = address[len("tcp://") :].rpartition(":") if address.startswith("tcp://") else ("", "", "")
    if not sep or not host or not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"remote env worker {address!r}: expected tcp://HOST:PORT")


class EnvWorkerConfig(msgspec.Struct, frozen=True, kw_only=True):
    workers: int = 2  # worker processes the pool starts (and restarts) itself
    # Workers started elsewhere (``turnrl env-worker --bind tcp://HOST:PORT``, on any machine): the pool connects
    # to each; one that goes silent is reconnected under a new name (the pool cannot restart its process).
    remote: tuple[str, ...] = ()
    threads_per_worker: int = 64
    heartbeat_s: float = 0.2
    heartbeat_timeout_s: float = 3.0
    start_timeout_s: float = 60.0
    plugins: tuple[str, ...] = ()  # modules a worker imports first (they register env families)

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        for address in self.remote:
            _check_remote(address)
        if len(set(self.remote)) != len(self.remote):
            raise ValueError("remote env workers must be distinct addresses")
        if self.workers + len(self.remote) < 1:
            raise ValueError("need at least one env worker (workers >= 1 or a remote address)")
        if self.threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be >= 1, got {self.threads_per_worker}")
        if not 0 < self.heartbeat_s < self.heartbeat_timeout_s:
            raise ValueError(
                f"need 0 < heartbeat_s < heartbeat_timeout_s, got {self.heartbeat_s}, {self.heartbeat_timeout_s}"
            )
