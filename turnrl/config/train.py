"""Run configuration as typed structs with defaults that run.

Invariant: every knob has one home here; a config is validated when it is built
(bad values raise ``ValueError`` naming the key) so no work starts on a bad one.
"""

from __future__ import annotations

import msgspec

from turnrl.config.algo import ADVANTAGE_ESTIMATOR_NAMES, AdvantageParams, CriticConfig, LearnerConfig
from turnrl.config.curriculum import CurriculumConfig
from turnrl.config.distributed import ShardingConfig
from turnrl.config.envs import EnvWorkerConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.config.generation import GeneratorConfig
from turnrl.config.model import DefaultModelConfig
from turnrl.config.placement import PlacementConfig
from turnrl.config.records import LoggingConfig


class EnvConfig(msgspec.Struct, frozen=True, kw_only=True):
    family: str = "babyai"
    options: dict[str, str | int | float | bool] = {}
    # None: envs in the training process; else env worker processes (started by the run, or remote addresses)
    workers: EnvWorkerConfig | None = None


class RolloutConfig(msgspec.Struct, frozen=True, kw_only=True):
    prompts_per_step: int = 8
    group_size: int = 8
    episode: EpisodeConfig = EpisodeConfig()
    concurrency: int = 1024
    max_batch: int = 256
    kv_cache_tokens: int = 2_000_000
    staleness: int = 0  # eta: weight versions a token may lag the weights it trains (0: on-policy, synchronous)
    generator: GeneratorConfig = GeneratorConfig()  # where generations come from (in process by default)
    # Free text with training wheels: the first N steps sample their replies under the env's listed actions
    # (as episode.constrain_to_valid_actions=true would), the later ones in free text as the episode says.
    constrained_steps: int = 0

    def __post_init__(self) -> None:
        if self.constrained_steps < 0:
            raise ValueError(f"rollout.constrained_steps must be >= 0, got {self.constrained_steps}")
        if self.constrained_steps and self.episode.constrain_to_valid_actions:
            raise ValueError(
                "rollout.constrained_steps is for free text: with rollout.episode.constrain_to_valid_actions=true "
                "every step is constrained already"
            )
        if self.staleness < 0:
            raise ValueError(f"rollout.staleness must be >= 0, got {self.staleness}")
        if self.prompts_per_step < 1:
            raise ValueError(f"rollout.prompts_per_step must be >= 1, got {self.prompts_per_step}")
        if self.group_size < 2:
            raise ValueError(f"rollout.group_size must be >= 2 (group baselines need two), got {self.group_size}")
        if self.generator.kind == "sglang" and (self.episode.constrain_to_valid_actions or self.constrained_steps):
            raise ValueError(
                "rollout.episode.constrain_to_valid_actions=true cannot run with rollout.generator.kind='sglang' "
                "(nor can rollout.constrained_steps > 0): "
                "SGLang has no counterpart of token-sequence constraints, so the policy it serves would not be "
                "the one trained; decode free text (the default) or use the local or service generator"
            )

    def constrained_at(self, step: int) -> bool:
        """Whether step ``step``'s replies are sampled under the env's listed actions."""
        return self.episode.constrain_to_valid_actions or step <= self.constrained_steps


class AlgoConfig(msgspec.Struct, frozen=True, kw_only=True):
    name: str = "grpo"  # the advantage estimator: grpo, ppo, reinforce_pp, rloo
    learner: LearnerConfig = LearnerConfig()
    advantage: AdvantageParams = AdvantageParams()
    critic: CriticConfig = CriticConfig()  # used by estimators that need values (ppo)
    drop_error_trajectories: bool = True

    def __post_init__(self) -> None:
        if self.name not in ADVANTAGE_ESTIMATOR_NAMES:  # unknown names fail when the config is built
            raise ValueError(f"unknown algorithm {self.name!r}; choose from: {', '.join(ADVANTAGE_ESTIMATOR_NAMES)}")


class EvalConfig(msgspec.Struct, frozen=True, kw_only=True):
    tasks: int = 200
    turn_cap: int = 6
    temperature: float = 0.0
    every: int = 0  # evaluate on held-out tasks every N steps (0: only before and after)

    def __post_init__(self) -> None:
        if self.tasks < 1:
            raise ValueError(f"eval.tasks must be >= 1, got {self.tasks}")
        if self.turn_cap < 1:
            raise ValueError(f"eval.turn_cap must be >= 1, got {self.turn_cap}")
        if self.every < 0:
            raise ValueError(f"eval.every must be >= 0, got {self.every}")


class ModelConfig(msgspec.Struct, frozen=True, kw_only=True):
    path: str | None = None  # a local HF model directory; None builds the embedded default
    default: DefaultModelConfig = DefaultModelConfig()
    device: str = "auto"


class TrainConfig(msgspec.Struct, frozen=True, kw_only=True):
    env: EnvConfig = EnvConfig()
    rollout: RolloutConfig = RolloutConfig()
    algo: AlgoConfig = AlgoConfig()
    model: ModelConfig = ModelConfig()
    eval: EvalConfig = EvalConfig()
    curriculum: CurriculumConfig = CurriculumConfig()
    logging: LoggingConfig = LoggingConfig()
    sharding: ShardingConfig = ShardingConfig()  # the learner under torchrun (turnrl.engine.distributed.train)
    placement: PlacementConfig = PlacementConfig()  # the roles on Ray (turnrl.engine.distributed.ray_job)
    steps: int = 100
    seed: int = 0
    out: str = "runs/latest"
    checkpoint_every: int = 0  # 0: only at the end

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")


def to_dict(config: msgspec.Struct) -> dict:
    return msgspec.to_builtins(config)
