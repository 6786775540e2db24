"""SciWorld family: ScienceWorld tasks over AgentGym's (task, variation) list (Java 17 needed).

Item ids ``[0, 4639)`` (see ``tasks``). Splits: test = every 23rd item from 0
(202 items spread over all 23 tasks, about AgentGym's 200-task evaluation size),
train = all the others.
"""

from turnrl.envs.registry import EnvSpec, TaskSplits, register_env
from turnrl.envs.sciworld.env import SciWorldEnv
from turnrl.envs.sciworld.tasks import NUM_ITEMS, sciworld_task

_TEST = range(0, NUM_ITEMS, 23)
# named split ``agentgym``: the paper's 200 SciWorld tasks, the first 200 of the test ids
SPLITS = TaskSplits(train=tuple(i for i in range(NUM_ITEMS) if i % 23), test=_TEST, named={"agentgym": _TEST[:200]})

register_env(
    EnvSpec(
        family="sciworld",
        factory=SciWorldEnv,
        splits=SPLITS,
        default_turn_cap=30,
        description="SciWorld (ScienceWorld, JVM) science tasks as text",
        categorize=lambda item_id, options: sciworld_task(item_id)[0],
    )
)

__all__ = ["NUM_ITEMS", "SPLITS", "SciWorldEnv", "sciworld_task"]
