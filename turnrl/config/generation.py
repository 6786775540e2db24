"""Where generations come from: in process, a GenerationService process, SGLang servers.

Invariant: a leaf: imports nothing heavier than msgspec; a struct is validated when built (a bad value raises
``ValueError`` naming its key).
"""

from __future__ import annotations

import msgspec

from turnrl.protocol import MAX_FRAME_BYTES, InFlightPolicy

GENERATOR_KINDS = ("local", "service", "sglang")
WEIGHT_MODES = ("auto", "shared", "copy")


SGLANG_WEIGHT_SYNC = ("disk", "nccl")
SGLANG_ROUTING = ("direct", "router")
SGLANG_MIN_VERSION = "0.5.23"  # pyproject's extra pins the same floor


class SGLangOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How turnrl talks to SGLang servers (``[rollout.generator.sglang]`` in a run config)."""

    # disk: every server loads a directory it can read; nccl: the learner broadcasts to every server
    weight_sync: str = "disk"
    # direct: the client picks a server per GRPO group / session; router: ``urls`` is one sglang-router (manual
    # policy) and ``worker_urls`` are the servers behind it, which control calls reach directly
    routing: str = "direct"
    worker_urls: tuple[str, ...] = ()
    colocated: bool = False  # servers share the learner's GPUs: their memory is released while it trains
    ready_timeout_s: float = 600.0  # wait for /health_generate before the first request
    connect_timeout_s: float = 10.0
    retries: int = 3  # connection errors retried per call, with exponential back-off
    retry_backoff_s: float = 0.5
    keepalive_expiry_s: float = 4.0  # below the server's 5 s keep-alive, so no stale connection is reused
    max_connections_per_server: int = 256
    resume_attempts: int = 8  # an aborted request's partial output is resumed at most this many times
    # nccl: the learner is rank 0 of a group with every server's tensor-parallel ranks
    nccl_master_address: str = "127.0.0.1"
    nccl_master_port: int = 0  # 0: a free port on the learner's host
    nccl_backend: str = "nccl"
    server_ranks: int = 1  # ranks per server in the weight group (its tensor-parallel size)
    bucket_mb: int = 512  # one broadcast per bucket of at most this many MiB

    def __post_init__(self) -> None:
        if self.weight_sync not in SGLANG_WEIGHT_SYNC:
            kinds = ", ".join(SGLANG_WEIGHT_SYNC)
            raise ValueError(f"sglang.weight_sync must be one of {kinds}, got {self.weight_sync!r}")
        if self.routing not in SGLANG_ROUTING:
            raise ValueError(f"sglang.routing must be one of {', '.join(SGLANG_ROUTING)}, got {self.routing!r}")
        if self.routing == "router" and not self.worker_urls:
            raise ValueError("sglang.worker_urls must name the servers behind the router for routing 'router'")
        for url in self.worker_urls:
            _check_url("sglang.worker_urls", url)
        for name in ("ready_timeout_s", "connect_timeout_s", "keepalive_expiry_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"sglang.{name} must be > 0, got {getattr(self, name)}")
        if self.retries < 0 or self.retry_backoff_s < 0:
            raise ValueError("sglang.retries and sglang.retry_backoff_s must be >= 0")
        if self.keepalive_expiry_s >= 5.0:
            raise ValueError(
                f"sglang.keepalive_expiry_s must be below the server's 5 s keep-alive, got {self.keepalive_expiry_s}"
            )
        for name in ("max_connections_per_server", "resume_attempts", "server_ranks", "bucket_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"sglang.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.nccl_master_port < 65536:
            raise ValueError(f"sglang.nccl_master_port must be a port number, got {self.nccl_master_port}")
        if self.nccl_backend not in ("nccl", "gloo"):
            raise ValueError(f"sglang.nccl_backend must be 'nccl' or 'gloo', got {self.nccl_backend!r}")


def _check_url(key: str, url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{key}: {url!r} is not an http(s) URL")


class GeneratorConfig(msgspec.Struct, frozen=True, kw_only=True):
    kind: str = "local"  # local: in process (shares the learner's model); service: a GenerationService process;
    # sglang: running SGLang servers (weights handed over through a directory they can read)
    address: str | None = None  # service: ipc:// or tcp:// endpoint (default: a socket in the run directory)
    # service: True connects to a service started elsewhere (``python -m turnrl.engine.generation.service``) at
    # ``address`` instead of starting one; it must serve the same model the run starts from
    external: bool = False
    # service: the largest frame either end accepts; a weight push is one frame (raise it for large models, and
    # start an external service with the same ``max_frame_bytes``)
    max_frame_bytes: int = MAX_FRAME_BYTES
    max_running: int = 64  # service: sequences decoded together
    # service (started by the run): torch threads of its process (None: torch's default, all cores); on a CPU
    # machine, fewer than all lets it decode while the learner computes on the others
    torch_threads: int | None = None
    urls: tuple[str, ...] = ()  # sglang: the servers' base URLs
    request_timeout_s: float | None = None
    # local: "shared" samples from the learner's own model (generation pauses for every update); "copy" keeps its
    # own copy, updated between decode steps (generation never stops); "auto": copy when rollout.staleness > 0
    weights: str = "auto"
    # local and service: requests running across a weight update "continue" under the new weights (every token
    # records its version) or "abort" and are resumed from their partial output
    in_flight: InFlightPolicy = "continue"
    sglang: SGLangOptions = SGLangOptions()  # kind sglang: how the servers are reached and updated

    def __post_init__(self) -> None:
        if self.weights not in WEIGHT_MODES:
            raise ValueError(
                f"rollout.generator.weights must be one of {', '.join(WEIGHT_MODES)}, got {self.weights!r}"
            )
        if self.in_flight not in ("continue", "abort"):
            raise ValueError(f"rollout.generator.in_flight must be 'continue' or 'abort', got {self.in_flight!r}")
        if self.kind not in GENERATOR_KINDS:
            raise ValueError(f"rollout.generator.kind must be one of {', '.join(GENERATOR_KINDS)}, got {self.kind!r}")
        if self.kind == "sglang" and not self.urls:
            raise ValueError("rollout.generator.urls must name at least one SGLang server for kind 'sglang'")
        if self.max_running < 1:
            raise ValueError(f"rollout.generator.max_running must be >= 1, got {self.max_running}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"rollout.generator.torch_threads must be >= 1 or None, got {self.torch_threads}")
        if self.max_frame_bytes < 1024:
            raise ValueError(f"rollout.generator.max_frame_bytes must be >= 1024, got {self.max_frame_bytes}")
        if self.external and (self.kind != "service" or not self.address):
            raise ValueError("rollout.generator.external needs kind 'service' and the service's address")
        if self.request_timeout_s is not None and self.request_timeout_s <= 0:
            raise ValueError(f"rollout.generator.request_timeout_s must be > 0, got {self.request_timeout_s}")


class ServiceConfig(msgspec.Struct, frozen=True, kw_only=True):
    model_path: str
    address: str = "ipc:///tmp/turnrl-generation.sock"
    max_running: int = 64
    max_frame_bytes: int = MAX_FRAME_BYTES
    default_timeout_s: float | None = None
    in_flight: InFlightPolicy = "continue"
    device: str = "cpu"
    seed: int = 0
    torch_threads: int | None = None
    kv_cache_tokens: int = 2_000_000  # per-session prefix reuse across turns (0: off)

    def __post_init__(self) -> None:
        if self.kv_cache_tokens < 0:
            raise ValueError(f"kv_cache_tokens must be >= 0, got {self.kv_cache_tokens}")
        if self.max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {self.max_running}")
        if self.max_frame_bytes < 1024:
            raise ValueError(f"max_frame_bytes must be >= 1024, got {self.max_frame_bytes}")
        if self.default_timeout_s is not None and self.default_timeout_s <= 0:
            raise ValueError(f"default_timeout_s must be > 0, got {self.default_timeout_s}")
        if not self.address.startswith(("ipc://", "tcp://", "inproc://")):
            raise ValueError(f"address must be ipc://, tcp:// or inproc://, got {self.address!r}")


class SGLangConfig(msgspec.Struct, frozen=True, kw_only=True):
    urls: list[str]
    request_timeout_s: float | None = None
    options: SGLangOptions = SGLangOptions()
    # running requests across a weight update: "continue" (retracted, then decoded under the new weights) or
    # "abort" (their partial output is resumed after the update)
    in_flight: InFlightPolicy = "continue"

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("urls must name at least one SGLang server")
        for url in self.urls:
            _check_url("urls", url)
        if self.options.routing == "router" and len(self.urls) != 1:
            raise ValueError(f"routing 'router' takes the router's one URL in urls, got {len(self.urls)}")
        if self.request_timeout_s is not None and self.request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")
        if self.in_flight not in ("continue", "abort"):
            raise ValueError(f"in_flight must be 'continue' or 'abort', got {self.in_flight!r}")

    @property
    def servers(self) -> list[str]:
        """The SGLang servers themselves (behind the router, or the URLs when there is none)."""
        urls = self.options.worker_urls if self.options.routing == "router" else self.urls
        return [u.rstrip("/") for u in urls]
