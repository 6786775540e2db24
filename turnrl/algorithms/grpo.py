"""GRPO advantages: each trajectory's reward relative to its group.

Invariant: ``A_i = (r_i - mean(r_group)) / (std(r_group) + eps)`` with the
unbiased std (``scale_by_std=False`` gives Dr.GRPO's ``r_i - mean``); a group of
one has advantage 0 (nothing to compare with). The scalar is broadcast to every
policy token of the trajectory and is 0 on every other token.
"""

from __future__ import annotations

import torch

from turnrl.algorithms.base import AdvantageInputs, AdvantageOutput, broadcast
from turnrl.algorithms.registry import register_advantage
from turnrl.config.algo import AdvantageParams


def grpo_scalar_advantages(
    rewards: torch.Tensor, groups: list[list[int]], eps: float = 1e-6, scale_by_std: bool = True
) -> torch.Tensor:
    advantages = torch.zeros(rewards.shape[0], dtype=torch.float64)
    for members in groups:
        if len(members) < 2:
            continue
        r = rewards[members].double()
        centred = r - r.mean()
        advantages[members] = centred / (r.std() + eps) if scale_by_std else centred
    return advantages.float()


@register_advantage("grpo")
def grpo(inputs: AdvantageInputs, params: AdvantageParams) -> AdvantageOutput:
    scalars = grpo_scalar_advantages(inputs.scores, inputs.groups, params.eps, params.scale_by_std)
    return AdvantageOutput(advantages=broadcast(scalars, inputs.mask))
