"""Turn-cap curricula: fixed, ScalingInter-RL's staged caps (per-family defaults), adaptive.

Invariant: a leaf: imports nothing heavier than msgspec; a struct is validated when built (a bad value raises
``ValueError`` naming its key).
"""

from __future__ import annotations

import msgspec

CURRICULUM_KINDS = ("fixed", "scaling_inter", "adaptive")


# (caps, steps per stage) per env family, from the ScalingInter-RL paper.
SCALING_INTER_DEFAULTS: dict[str, tuple[tuple[int, ...], int]] = {
    "babyai": ((6, 13, 20), 100),
    "textcraft": ((10, 20, 30), 100),
    "sciworld": ((10, 20, 30), 100),
    "search": ((5, 8, 10), 100),
    "web": ((8, 12, 15), 80),
}


class CurriculumConfig(msgspec.Struct, frozen=True, kw_only=True):
    kind: str = "fixed"
    caps: tuple[int, ...] = ()  # empty: the family's ScalingInter defaults (fixed: the rollout's turn cap)
    stage_steps: int = 0  # steps per stage; 0: the family's default
    scale: float = 1.0  # multiplies stage_steps, for short runs
    cap_share_threshold: float = 0.5  # adaptive: share of episodes ending at the cap that advances a stage
    plateau_window: int = 10  # adaptive: steps compared for a success plateau (0 disables)
    plateau_delta: float = 0.02  # adaptive: minimum gain in mean success over a window
    min_stage_steps: int = 5  # adaptive: never advance sooner than this after the last advance

    def __post_init__(self) -> None:
        if self.kind not in CURRICULUM_KINDS:
            raise ValueError(f"curriculum.kind must be one of {', '.join(CURRICULUM_KINDS)}, got {self.kind!r}")
        if any(c < 1 for c in self.caps):
            raise ValueError(f"curriculum.caps must be positive, got {list(self.caps)}")
        if any(b <= a for a, b in zip(self.caps, self.caps[1:], strict=False)):
            raise ValueError(f"curriculum.caps must be strictly increasing, got {list(self.caps)}")
        if self.stage_steps < 0:
            raise ValueError(f"curriculum.stage_steps must be >= 0, got {self.stage_steps}")
        if not self.scale > 0:
            raise ValueError(f"curriculum.scale must be > 0, got {self.scale}")
        if not 0 < self.cap_share_threshold <= 1:
            raise ValueError(f"curriculum.cap_share_threshold must be in (0, 1], got {self.cap_share_threshold}")
