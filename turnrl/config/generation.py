"""Where generations come from: in process, a GenerationService process, SGLang servers.

Invariant: a leaf: imports nothing heavier than msgspec; a struct is validated when built (a bad value raises
``ValueError`` naming its key).
"""

from __future__ import annotations

import msgspec

from turnrl.protocol import MAX_FRAME_BYTES, InFlightPolicy

GENERATOR_KINDS = ("local", "service", "sglang")
WEIGHT_MODES = ("auto", "shared", "copy")


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
    urls: tuple[str, ...] = ()  # sglang: the servers' base URLs
    request_timeout_s: float | None = None
    # local: "shared" samples from the learner's own model (generation pauses for every update); "copy" keeps its
    # own copy, updated between decode steps (generation never stops); "auto": copy when rollout.staleness > 0
    weights: str = "auto"
    # local and service: requests running across a weight update "continue" under the new weights (every token
    # records its version) or "abort" and are resumed from their partial output
    in_flight: InFlightPolicy = "continue"

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
    connect_timeout_s: float = 10.0
    max_connections: int = 1024

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("urls must name at least one SGLang server")
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"urls: {url!r} is not an http(s) URL")
        if self.request_timeout_s is not None and self.request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")
