"""GRPO advantages: each trajectory's reward relative to its group.

Invariant: ``A_i = (r_i - mean(r_group)) / (std(r_group) + eps)`` with the
unbiased std (``scale_by_std=False`` gives Dr.GRPO's ``r_i - mean``); a group of
one has advantage 0 (nothing to compare with). The scalar is broadcast to every
policy token of the trajectory and is 0 on every other token.
"""

from __future__ import annotations

import torch

from turnrl.algorithms.grouping import group_indices
from turnrl.algorithms.registry import register_advantage
from turnrl.protocol import Trajectory


def grpo_scalar_advantages(rewards: torch.Tensor, groups: list[list[int]], eps: float = 1e-6,
                           scale_by_std: bool = True) -> torch.Tensor:
    advantages = torch.zeros_like(rewards, dtype=torch.float64)
    for members in groups:
        if len(members) < 2:
            continue
        r = rewards[members].double()
        centred = r - r.mean()
        advantages[members] = centred / (r.std() + eps) if scale_by_std else centred
    return advantages.float()


def broadcast_to_tokens(trajectories: list[Trajectory], scalars: torch.Tensor) -> list[torch.Tensor]:
    return [
        torch.tensor(t.loss_mask, dtype=torch.float32) * float(scalars[i]) for i, t in enumerate(trajectories)
    ]


@register_advantage("grpo")
def grpo(trajectories: list[Trajectory], eps: float = 1e-6, scale_by_std: bool = True) -> list[torch.Tensor]:
    rewards = torch.tensor([t.reward for t in trajectories], dtype=torch.float64)
    groups = list(group_indices(trajectories).values())
    return broadcast_to_tokens(trajectories, grpo_scalar_advantages(rewards, groups, eps, scale_by_std))
