"""What ``turnrl bench rollout`` runs: the env (a registered family or a remote AgentGym server), the generator,
the episodes and their limits.

Invariant: a leaf: imports nothing heavier than msgspec; a struct is validated when built (a bad value raises
``ValueError`` naming its option as the command line spells it).
"""

from __future__ import annotations

import msgspec

from turnrl.config.generation import GENERATOR_KINDS

BENCH_MODES = ("async", "lockstep")


class RolloutBenchConfig(msgspec.Struct, frozen=True, kw_only=True):
    env: str | None = None  # a registered env family
    env_url: str | None = None  # or the base URL of an AgentGym-style env server
    env_protocol: str = "agentgym"  # the remote server's field names (see turnrl.envs.http.client.PROTOCOLS)
    env_options: dict[str, str] = {}  # options of a registered family (e.g. level=GoToLocal)
    env_workers: int = 0  # > 0: registered envs live in this many EnvWorker processes
    generator: str = "local"
    sglang_urls: tuple[str, ...] = ()
    model: str | None = None  # a local HF model directory (default: the embedded tiny model, untrained)
    episodes: int = 64
    concurrency: int = 16
    max_turns: int | None = None  # default: the env's own turn cap
    max_new_tokens: int = 32
    time_limit_s: float | None = None  # per mode; a run cut short reports what it did
    modes: tuple[str, ...] = BENCH_MODES
    repeats: int = 1  # rounds of every mode, interleaved; each mode reports its median round
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.env is None) == (self.env_url is None):
            raise ValueError("give exactly one of --env (a registered family) or --env-url (a remote env server)")
        if self.env_url is not None and not self.env_url.startswith(("http://", "https://")):
            raise ValueError(f"--env-url must start with http:// or https://, got {self.env_url!r}")
        if self.env_url is not None and self.env_workers:
            raise ValueError("--env-workers applies to a registered family, not to --env-url")
        if self.generator not in GENERATOR_KINDS:
            raise ValueError(f"--generator must be one of {', '.join(GENERATOR_KINDS)}, got {self.generator!r}")
        if self.generator == "sglang":
            if not self.sglang_urls:
                raise ValueError("--generator sglang needs --sglang-urls (comma-separated server base URLs)")
            if self.model is None:
                raise ValueError("--generator sglang needs --model (the served model's directory, for its tokenizer)")
        elif self.sglang_urls:
            raise ValueError("--sglang-urls applies only with --generator sglang")
        for url in self.sglang_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"--sglang-urls: {url!r} must start with http:// or https://")
        for name, flag in (("episodes", "--episodes"), ("concurrency", "--concurrency"), ("max_new_tokens", None)):
            if getattr(self, name) < 1:
                raise ValueError(f"{flag or '--max-new-tokens'} must be >= 1, got {getattr(self, name)}")
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError(f"--max-turns must be >= 1, got {self.max_turns}")
        if self.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {self.repeats}")
        if self.env_workers < 0:
            raise ValueError(f"--env-workers must be >= 0, got {self.env_workers}")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"--time-limit must be > 0 seconds, got {self.time_limit_s}")
        if not self.modes or any(m not in BENCH_MODES for m in self.modes):
            raise ValueError(f"modes must be among {', '.join(BENCH_MODES)}, got {self.modes!r}")
