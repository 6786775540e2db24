"""Which tasks each training step rolls out.

Invariant: the tasks of step ``s`` are a pure function of (seed, s, split range),
so a resumed run draws exactly the tasks it would have drawn; only the train
split is ever sampled for training; each prompt is repeated ``group_size`` times
with one group index, so its rollouts form one group.
"""

from __future__ import annotations

import random

from turnrl.protocol import Task


class TaskSampler:
    def __init__(self, env: str, items: range, prompts_per_step: int, group_size: int, seed: int = 0):
        if len(items) == 0:
            raise ValueError("the item range to sample from is empty")
        self.env = env
        self.items = items
        self.prompts_per_step = prompts_per_step
        self.group_size = group_size
        self.seed = seed

    def tasks_for_step(self, step: int) -> list[Task]:
        rng = random.Random(f"{self.seed}:{step}")
        tasks = []
        for prompt in range(self.prompts_per_step):
            item = self.items[rng.randrange(len(self.items))]
            group = step * self.prompts_per_step + prompt
            tasks.extend(Task(env=self.env, item_id=item, split="train", group=group) for _ in range(self.group_size))
        return tasks


def heldout_tasks(env: str, items: range, count: int) -> list[Task]:
    """The first ``count`` items of the held-out split, in order."""
    if count > len(items):
        raise ValueError(f"asked for {count} held-out tasks but the split has {len(items)}")
    return [Task(env=env, item_id=items[i], split="test", group=i) for i in range(count)]
