"""Web family: WebArena-style tasks in real headless Chromium, offline on a bundled shop and forum.

Item id ``i`` is task ``i`` of ``tasks.builtin_tasks()`` (38 tasks: 18 shop, 20 forum). Splits: test is
every fourth task (``range(0, 38, 4)``, 10 tasks), train the other 28. ``WebEnv(tasks=path, site_urls=...)``
runs WebArena task files against real sites instead.
"""

from turnrl.envs.registry import EnvSpec, TaskSplits, register_env
from turnrl.envs.web.env import WebEnv
from turnrl.envs.web.tasks import builtin_tasks

NUM_ITEMS = len(builtin_tasks())
TEST = range(0, NUM_ITEMS, 4)
# named split ``agentgym``: every bundled task (38; the paper evaluates 50 WebArena tasks on real sites)
SPLITS = TaskSplits(
    train=tuple(i for i in range(NUM_ITEMS) if i not in TEST), test=TEST, named={"agentgym": range(NUM_ITEMS)}
)

register_env(
    EnvSpec(
        family="web",
        factory=WebEnv,
        splits=SPLITS,
        default_turn_cap=15,
        description="Web: WebArena-style browsing tasks on a bundled shop and forum in headless Chromium",
    )
)

__all__ = ["NUM_ITEMS", "SPLITS", "WebEnv"]
