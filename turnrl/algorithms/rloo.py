"""RLOO advantages: each trajectory's reward against the mean of the *other* members of its group.

Invariant: ``A_i = r_i - mean_{j != i} r_j = n / (n - 1) * (r_i - mean(r_group))``;
a group of one has advantage 0; broadcast to the trajectory's policy tokens.
"""

from __future__ import annotations

import torch

from turnrl.algorithms.base import AdvantageInputs, AdvantageOutput, broadcast
from turnrl.algorithms.registry import register_advantage
from turnrl.config.algo import AdvantageParams


def leave_one_out(rewards: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    out = torch.zeros(rewards.shape[0], dtype=torch.float64)
    for members in groups:
        n = len(members)
        if n < 2:
            continue
        r = rewards[members].double()
        out[members] = r - (r.sum() - r) / (n - 1)
    return out.float()


@register_advantage("rloo")
def rloo(inputs: AdvantageInputs, params: AdvantageParams) -> AdvantageOutput:
    return AdvantageOutput(advantages=broadcast(leave_one_out(inputs.scores, inputs.groups), inputs.mask))
