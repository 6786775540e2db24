"""Trajectory groups: the n rollouts of one prompt.

Invariant: two trajectories are in the same group exactly when their tasks are
equal (env, item id, split and group index), so two groups that happen to draw
the same item are never merged.
"""

from __future__ import annotations

from collections import defaultdict

from turnrl.protocol import Task, Trajectory


def group_indices(trajectories: list[Trajectory]) -> dict[Task, list[int]]:
    groups: dict[Task, list[int]] = defaultdict(list)
    for i, traj in enumerate(trajectories):
        groups[traj.task].append(i)
    return dict(groups)
