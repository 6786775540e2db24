"""BabyAI family: text observations and high-level actions over minigrid.

Splits (item id = level seed): train ``[0, 1_000_000)``, test ``[1_000_000, 1_001_000)``.
"""

from turnrl.envs.babyai.env import BabyAIEnv
from turnrl.envs.registry import EnvSpec, TaskSplits, register_env

SPLITS = TaskSplits(train=range(0, 1_000_000), test=range(1_000_000, 1_001_000))

register_env(
    EnvSpec(
        family="babyai",
        factory=BabyAIEnv,
        splits=SPLITS,
        default_turn_cap=6,
        description="BabyAI (minigrid) as text with high-level actions",
    )
)

__all__ = ["SPLITS", "BabyAIEnv"]
