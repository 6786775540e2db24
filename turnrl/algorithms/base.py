"""What an advantage estimator sees and returns.

Invariant: every tensor is [B, T] over the padded batch, position ``t`` being
token ``t``; ``mask`` marks policy tokens; ``token_rewards`` carries each reward
on the last token of the turn it belongs to (zero elsewhere); estimators return
advantages that are exactly zero off the mask, and (for critics) returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from turnrl.algorithms.grouping import group_indices
from turnrl.config.algo import AdvantageParams
from turnrl.protocol import Trajectory


@dataclass
class AdvantageInputs:
    mask: torch.Tensor  # [B, T] bool
    token_rewards: torch.Tensor  # [B, T] float32
    scores: torch.Tensor  # [B] float32: the trajectory's reward
    groups: list[list[int]]
    old_logprobs: torch.Tensor  # [B, T]
    values: torch.Tensor | None = None  # [B, T] critic values (needs_values)
    ref_logprobs: torch.Tensor | None = None  # [B, T] reference log-probs (needs_reference)


@dataclass
class AdvantageOutput:
    advantages: torch.Tensor  # [B, T], zero off the mask
    returns: torch.Tensor | None = None  # [B, T] value targets


@dataclass(frozen=True)
class EstimatorSpec:
    name: str
    fn: Callable[[AdvantageInputs, AdvantageParams], AdvantageOutput]
    needs_values: bool = False
    needs_reference: bool = False


def token_rewards(trajectories: list[Trajectory], width: int, per_turn: bool) -> torch.Tensor:
    """Rewards on the last action token of their turn: every turn's (``per_turn``) or the trajectory's final one."""
    out = torch.zeros((len(trajectories), width), dtype=torch.float32)
    for row, traj in enumerate(trajectories):
        if not traj.turns:
            continue
        if per_turn:
            for turn in traj.turns:
                out[row, turn.action_end - 1] += turn.reward
        else:
            out[row, traj.turns[-1].action_end - 1] = traj.reward
    return out


def advantage_inputs(
    trajectories: list[Trajectory], mask: torch.Tensor, old_logprobs: torch.Tensor, per_turn_rewards: bool
) -> AdvantageInputs:
    return AdvantageInputs(
        mask=mask,
        token_rewards=token_rewards(trajectories, mask.shape[1], per_turn_rewards),
        scores=torch.tensor([t.reward for t in trajectories], dtype=torch.float32),
        groups=list(group_indices(trajectories).values()),
        old_logprobs=old_logprobs,
    )


def broadcast(scalars: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One value per row, on that row's policy tokens."""
    return scalars.float()[:, None] * mask.float()


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(x - mean) / std over the masked entries (unbiased std); zero off the mask."""
    m = mask.bool()
    n = int(m.sum())
    if n < 2:
        return torch.zeros_like(x)
    values = x[m].double()
    out = (x.double() - values.mean()) / (values.std() + eps)
    return (out * m).float()
