"""`turnrl eval`: Avg@k / Pass@k over a split.

Invariant: a leaf: imports nothing heavier than msgspec; a struct is validated when built (a bad value raises
``ValueError`` naming its key).
"""

from __future__ import annotations

import msgspec

DECODINGS = ("auto", "constrained", "free")


class EvalAtKConfig(msgspec.Struct, frozen=True, kw_only=True):
    model: str  # a model directory, or a run directory (its latest checkpoint)
    env: str | None = None  # default: the run's family, else babyai
    split: str = "test"  # train, test, or a named split of the family (agentgym: the paper's evaluation set)
    k: int = 1
    n: int | None = None  # samples per task (default: k); Pass@k is estimated from n >= k
    tasks: int | None = None  # the first N items of the split (default: all)
    turn_cap: int | None = None  # default: the run's eval cap, else the env's default
    temperature: float = 1.0
    decoding: str = "auto"  # auto: the run's training decoding; a bare model directory writes free text
    options: dict[str, str | int | float | bool] = {}  # env options (default: the run's, e.g. its BabyAI level)
    seed: int = 0
    device: str = "auto"  # auto: cuda when available
    concurrency: int = 1024

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"-k must be >= 1, got {self.k}")
        if self.n is not None and self.n < self.k:
            raise ValueError(f"-n must be >= k={self.k}, got {self.n}")
        if self.tasks is not None and self.tasks < 1:
            raise ValueError(f"--tasks must be >= 1, got {self.tasks}")
        if self.turn_cap is not None and self.turn_cap < 1:
            raise ValueError(f"--turn-cap must be >= 1, got {self.turn_cap}")
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        if self.decoding not in DECODINGS:
            raise ValueError(f"--decoding must be one of {', '.join(DECODINGS)}, got {self.decoding!r}")
        if not self.split:
            raise ValueError("--split must name a split (train, test, or a family's named split such as agentgym)")

    @property
    def samples(self) -> int:
        return self.k if self.n is None else self.n
