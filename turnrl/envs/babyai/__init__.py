"""BabyAI family: text observations and high-level actions over minigrid.

Splits: train ``[0, 1_000_000)``, test ``[1_000_000, 1_001_000)``. With one named level (the
default, ``GoToLocal``) the item id is the level's seed; with ``level="all"`` (what ``serve-env babyai``
uses) item ``i`` is AgentGym's level ``i % 40`` with seed ``i // 40``, so both splits cover all 40
levels, and the test ids' seeds (25000 and up) never occur in training.
"""

from turnrl.envs.babyai.env import BabyAIEnv
from turnrl.envs.babyai.levels import ALL_LEVELS, agentgym_task
from turnrl.envs.registry import EnvSpec, TaskSplits, register_env

# the named split ``agentgym`` (the paper's 90 BabyAI tasks, played with ``level="all"``): the first 90
# test ids, i.e. all 40 levels at seeds 25000 and 25001, then the first 10 levels at seed 25002
SPLITS = TaskSplits(
    train=range(0, 1_000_000), test=range(1_000_000, 1_001_000), named={"agentgym": range(1_000_000, 1_000_090)}
)


def level_of(item_id: int, options) -> str:
    """The level an item plays: the named level, or AgentGym's level for the id under ``level="all"``."""
    level = options.get("level", "GoToLocal")
    return agentgym_task(item_id)[0] if level in (None, ALL_LEVELS) else str(level)


register_env(
    EnvSpec(
        family="babyai",
        factory=BabyAIEnv,
        splits=SPLITS,
        default_turn_cap=6,
        description="BabyAI (minigrid) as text with high-level actions",
        categorize=level_of,
    )
)

__all__ = ["SPLITS", "BabyAIEnv"]
