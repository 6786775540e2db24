"""Task sampling: the tasks of a step are a pure function of (seed, step); groups; the held-out tasks."""

from __future__ import annotations

import pytest

from turnrl.engine.rollout.sampler import TaskSampler, heldout_tasks


def test_sampler_is_a_pure_function_of_step():
    a = TaskSampler("babyai", range(0, 1000), prompts_per_step=3, group_size=4, seed=1)
    b = TaskSampler("babyai", range(0, 1000), prompts_per_step=3, group_size=4, seed=1)
    assert a.tasks_for_step(7) == b.tasks_for_step(7)
    assert a.tasks_for_step(7) != a.tasks_for_step(8)
    tasks = a.tasks_for_step(2)
    assert len(tasks) == 12 and len({t.group for t in tasks}) == 3
    assert all(t.split == "train" and 0 <= t.item_id < 1000 for t in tasks)
    held = heldout_tasks("babyai", range(1000, 1010), 5)
    assert [t.item_id for t in held] == list(range(1000, 1005)) and all(t.split == "test" for t in held)
    with pytest.raises(ValueError):
        heldout_tasks("babyai", range(1000, 1010), 11)
