"""Where a job's roles run when Ray places them (``turnrl.engine.distributed.ray_job``).

Invariant: a leaf: imports nothing heavier than msgspec; a struct is validated when built (a bad value raises
``ValueError`` naming its key). One bundle per role instance: learner ranks, one generation service, env workers.
"""

from __future__ import annotations

import msgspec

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementConfig(msgspec.Struct, frozen=True, kw_only=True):
    learner_ranks: int = 1  # torch.distributed ranks of the sharded learner (one actor each)
    env_workers: int = 1  # env worker actors (each one worker process serving many envs)
    cpus_per_learner: float = 1.0
    gpus_per_learner: float = 0.0
    cpus_per_generator: float = 1.0
    gpus_per_generator: float = 0.0
    cpus_per_env_worker: float = 1.0
    strategy: str = "PACK"  # Ray placement-group strategy over all the bundles
    ready_timeout_s: float = 300.0  # for the placement group and every role to come up

    def __post_init__(self) -> None:
        if self.learner_ranks < 1 or self.env_workers < 1:
            raise ValueError("placement.learner_ranks and placement.env_workers must be >= 1")
        for key in ("cpus_per_learner", "cpus_per_generator", "cpus_per_env_worker"):
            if not getattr(self, key) > 0:
                raise ValueError(f"placement.{key} must be > 0, got {getattr(self, key)}")
        if self.gpus_per_learner < 0 or self.gpus_per_generator < 0:
            raise ValueError("placement.gpus_per_learner and gpus_per_generator must be >= 0")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"placement.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not self.ready_timeout_s > 0:
            raise ValueError(f"placement.ready_timeout_s must be > 0, got {self.ready_timeout_s}")
