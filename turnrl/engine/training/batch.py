"""Trajectories -> padded tensors, and the policy's log-probs on exactly the policy tokens.

Invariant: position ``t`` of every [B, T] tensor refers to token ``t`` of the
trajectory (right padding); ``loss_mask[b, t] == 1`` only where the policy sampled
token ``t``; the log-prob of token ``t`` is computed from the hidden state at
``t - 1``, and the LM head runs only on those positions. A token sampled under a
constraint (``Turn.allowed``) gets the log-prob of the distribution renormalised
over the tokens that were allowed there, exactly as it was sampled. A free-text reply recorded beside the env's
listed replies (``Turn.listed``) trains the same way while it stays on the list (conditioned on staying there,
it was drawn from exactly that renormalised distribution); a reply that left the list keeps one policy token,
the one where it left, whose log-prob is the mass of the list there; the rest of it carries no loss.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from turnrl.models.constraints import constrained_positions, listed_positions
from turnrl.models.forward import token_logprobs
from turnrl.protocol import Trajectory


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long
    loss_mask: torch.Tensor  # [B, T] bool
    old_logprobs: torch.Tensor  # [B, T] float32
    advantages: torch.Tensor  # [B, T] float32
    constraint_index: torch.Tensor | None = None  # [M, 2] (row, position) of constrained tokens
    constraint_allowed: torch.Tensor | None = None  # [M, K] allowed token ids, -1 padded
    constraint_set_target: torch.Tensor | None = None  # [M] bool: the log-prob of the allowed set (left the list)
    constraint_recorded: torch.Tensor | None = None  # [M] bool: listed beside free text, not sampled under it
    returns: torch.Tensor | None = None  # [B, T] value targets (critic)
    old_values: torch.Tensor | None = None  # [B, T] critic values at rollout time
    ref_logprobs: torch.Tensor | None = None  # [B, T] frozen reference policy
    proximal_logprobs: torch.Tensor | None = None  # [B, T] the learner's own, before this update (off-policy)
    is_weights: torch.Tensor | None = None  # [B, T] proximal / behaviour importance weights (off-policy)

    @property
    def num_tokens(self) -> int:
        return int(self.loss_mask.sum())

    def select(self, rows: list[int]) -> TokenBatch:
        """The given rows, trimmed to their longest sequence (constraints re-indexed)."""
        index = torch.tensor(rows, dtype=torch.long)
        width = max(int(self.attention_mask[index].sum(-1).max()), 1)
        picked = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name.startswith("constraint_") or value is None:
                continue
            picked[field.name] = value[index, :width]
        constraints = {f.name: None for f in fields(self) if f.name.startswith("constraint_")}
        if self.constraint_index is not None:
            remap = {row: i for i, row in enumerate(rows)}
            keep = [i for i, r in enumerate(self.constraint_index[:, 0].tolist()) if r in remap]
            if keep:
                for name in constraints:
                    value = getattr(self, name)
                    constraints[name] = None if value is None else value[keep]
                new_rows = torch.tensor([remap[int(r)] for r in constraints["constraint_index"][:, 0]])
                constraints["constraint_index"] = torch.stack([new_rows, constraints["constraint_index"][:, 1]], dim=1)
        return replace(self, **picked, **constraints)


def pack(trajectories: list[Trajectory], advantages: list[torch.Tensor] | None, pad_token_id: int) -> TokenBatch:
    if not trajectories:
        raise ValueError("cannot pack an empty list of trajectories")
    width = max(len(t.token_ids) for t in trajectories)
    batch = len(trajectories)
    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    loss_mask = torch.zeros((batch, width), dtype=torch.bool)
    old = torch.zeros((batch, width), dtype=torch.float32)
    adv = torch.zeros((batch, width), dtype=torch.float32)
    for row, traj in enumerate(trajectories):
        n = len(traj.token_ids)
        if not (len(traj.loss_mask) == len(traj.logprobs) == n):
            raise ValueError(f"trajectory {row}: token_ids, loss_mask and logprobs differ in length")
        input_ids[row, :n] = torch.tensor(traj.token_ids, dtype=torch.long)
        attention[row, :n] = 1
        loss_mask[row, :n] = torch.tensor(traj.loss_mask, dtype=torch.bool)
        old[row, :n] = torch.tensor(traj.logprobs, dtype=torch.float32)
        if advantages is not None:
            if advantages[row].shape[0] != n:
                raise ValueError(f"trajectory {row}: advantages have {advantages[row].shape[0]} entries, expected {n}")
            adv[row, :n] = advantages[row]
    loss_mask[:, 0] = False  # the first token has no context to predict it from
    constraints = _constraints(trajectories, loss_mask)
    return TokenBatch(input_ids, attention, loss_mask, old, adv, *constraints)


def _constraints(trajectories: list[Trajectory], loss_mask: torch.Tensor):
    """(index, allowed, set_target, recorded) of every constrained or listed position; clears ``loss_mask`` on
    the tokens of a reply that left its list, except the one where it left."""
    where: list[tuple[int, int]] = []
    sets: list[list[int]] = []
    set_target: list[bool] = []
    recorded: list[bool] = []
    for row, traj in enumerate(trajectories):
        for turn in traj.turns:
            start, end = turn.action_start, turn.action_end
            output = traj.token_ids[start:end]
            left_at = None
            if turn.allowed is not None:
                positions = constrained_positions(turn.allowed, output)
            elif turn.listed is not None:
                positions, left_at = listed_positions(turn.listed, output)
            else:
                continue
            if left_at is not None:
                loss_mask[row, start:end] = False
                if left_at == len(output):  # stopped early on the list: nothing to train
                    continue
                positions = positions[left_at:]
                loss_mask[row, start + left_at] = True
            first = start if left_at is None else start + left_at
            for offset, allowed in enumerate(positions):
                where.append((row, first + offset))
                sets.append(allowed)
                set_target.append(left_at is not None)
                recorded.append(turn.allowed is None)
    if not where:
        return None, None, None, None
    width = max(len(a) for a in sets)
    allowed = torch.full((len(sets), width), -1, dtype=torch.long)
    for i, a in enumerate(sets):
        allowed[i, : len(a)] = torch.tensor(a, dtype=torch.long)
    return (
        torch.tensor(where, dtype=torch.long),
        allowed,
        torch.tensor(set_target, dtype=torch.bool),
        torch.tensor(recorded, dtype=torch.bool),
    )


def policy_logprobs(
    model, batch: TokenBatch, temperature: float = 1.0, chunk_rows: int = 2048, off_list_log_prob: str = "mass"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Log-probs and entropies [B, T] at the batch's policy tokens (0 elsewhere), and the log-prob [M] that each
    constrained or listed position's token lies in its allowed set (None without any); see ``models.forward``."""
    return token_logprobs(
        model,
        batch.input_ids,
        batch.attention_mask,
        batch.loss_mask,
        temperature,
        chunk_rows,
        batch.constraint_index,
        batch.constraint_allowed,
        batch.constraint_set_target,
        off_list_log_prob,
    )


def micro_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped so that ``len(group) * max length in group <= max_tokens`` (one at least)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * lengths[i] > max_tokens:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups
