"""Advantages over a padded ``[B, T]`` batch: token-level GAE, turn-level GAE, discounted returns.

Invariant: tokens with ``mask == 0`` are transparent: the running advantage (or
return) and the "next value" pass through them unchanged, they get 0 in every
output, and their rewards are ignored (rewards sit on policy tokens). The value
after a row's last policy token is 0.

- ``gae``: over each row's policy tokens in order, ``delta = r + gamma * V_next - V``,
  ``A = delta + gamma * lam * A_next``, ``return = A + V``.
- ``turn_gae``: a turn is a maximal run of equal ``turn_ids`` (>= 0) among a row's
  policy tokens (a policy token with ``turn_ids == -1`` belongs to no turn and is
  treated like a masked one). A turn's value is the value at its first token, its
  reward the sum over its tokens; GAE runs over the row's turns and each turn's
  advantage and return are broadcast to its tokens.
- ``discounted_returns`` (REINFORCE++): ``G = r + gamma * G_next`` over policy tokens.

Outputs are float32 computed with float32 accumulation; the ``*_reference``
functions are the spec, plain loops in float64. With ``moments=True`` an op also
returns the ``Moments`` of its advantages over the tokens that received one,
gathered in the same pass on the Triton path, so whitening needs no second read.
Bad shapes, dtypes, devices or ``gamma``/``lam`` raise ``ValueError`` naming the
argument before any kernel runs; NaN/inf in ``rewards`` or ``values`` raises too
(``check_finite=False`` skips that scan).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from turnrl.kernels import checks
from turnrl.kernels.backend import choose
from turnrl.kernels.moments import masked_moments_torch, moments_from_partials
from turnrl.kernels.scan import Packing, discounted_suffix_sum

# ---------------------------------------------------------------- references (the spec)


def _rows(*tensors: torch.Tensor) -> list[list]:
    return [t.tolist() for t in tensors]


def gae_reference(rewards, values, mask, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    r, v, m = _rows(rewards.double(), values.double(), mask != 0)
    adv, ret = torch.zeros(rewards.shape, dtype=torch.float64), torch.zeros(rewards.shape, dtype=torch.float64)
    for b in range(len(r)):
        next_value = running = 0.0
        for t in reversed(range(len(r[b]))):
            if m[b][t]:
                running = r[b][t] + gamma * next_value - v[b][t] + gamma * lam * running
                adv[b, t], ret[b, t] = running, running + v[b][t]
                next_value = v[b][t]
    return adv, ret


def turn_gae_reference(rewards, values, mask, turn_ids, gamma: float, lam: float):
    r, v, m, ids = _rows(rewards.double(), values.double(), mask != 0, turn_ids)
    adv, ret = torch.zeros(rewards.shape, dtype=torch.float64), torch.zeros(rewards.shape, dtype=torch.float64)
    for b in range(len(r)):
        turns: list[list[int]] = []  # positions of each turn's tokens
        for t in range(len(r[b])):
            if m[b][t] and ids[b][t] >= 0:
                if turns and ids[b][turns[-1][-1]] == ids[b][t]:
                    turns[-1].append(t)
                else:
                    turns.append([t])
        next_value = running = 0.0
        for tokens in reversed(turns):
            value = v[b][tokens[0]]
            running = sum(r[b][t] for t in tokens) + gamma * next_value - value + gamma * lam * running
            for t in tokens:
                adv[b, t], ret[b, t] = running, running + value
            next_value = value
    return adv, ret


def discounted_returns_reference(rewards, mask, gamma: float) -> torch.Tensor:
    r, m = _rows(rewards.double(), mask != 0)
    out = torch.zeros(rewards.shape, dtype=torch.float64)
    for b in range(len(r)):
        running = 0.0
        for t in reversed(range(len(r[b]))):
            if m[b][t]:
                running = r[b][t] + gamma * running
                out[b, t] = running
    return out


# ---------------------------------------------------------------- torch fast path (any device)


def _keep(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


def _gae_torch(rewards, values, mask, gamma: float, lam: float):
    packing = Packing(_keep(mask))
    r, v = packing.pack(rewards.float()), packing.pack(values.float())
    delta = r + gamma * F.pad(v[:, 1:], (0, 1)) - v
    adv = packing.unpack(discounted_suffix_sum(delta, gamma * lam))
    return adv, adv + values.float() * packing.keep


def _turn_gae_torch(rewards, values, mask, turn_ids, gamma: float, lam: float):
    packing = Packing(_keep(mask) & (turn_ids >= 0))
    ids = packing.pack(turn_ids.long(), fill=-1)
    r, v = packing.pack(rewards.float()), packing.pack(values.float())
    first = (ids >= 0) & (ids != F.pad(ids[:, :-1], (1, 0), value=-1))  # first token of each turn
    turn = first.cumsum(1) - 1  # turn index of each packed token
    n_turns = int(first.sum(1).max()) if first.numel() else 0
    turn_reward = r.new_zeros(r.shape[0], n_turns + 1).scatter_add_(1, torch.where(ids >= 0, turn, n_turns), r)
    turn_value = r.new_zeros(r.shape[0], n_turns + 1).scatter_(1, torch.where(first, turn, n_turns), v)
    turn_reward, turn_value = turn_reward[:, :n_turns], turn_value[:, :n_turns]
    delta = turn_reward + gamma * F.pad(turn_value[:, 1:], (0, 1)) - turn_value
    turn_adv = discounted_suffix_sum(delta, gamma * lam)
    token_turn = packing.unpack(turn).clamp_(min=0)
    return packing.unpack(turn_adv, token_turn), packing.unpack(turn_adv + turn_value, token_turn)


def _discounted_returns_torch(rewards, mask, gamma: float):
    packing = Packing(_keep(mask))
    return packing.unpack(discounted_suffix_sum(packing.pack(rewards.float()), gamma))


# ---------------------------------------------------------------- checks and dispatch


def _check(rewards, values, mask, turn_ids, gamma, lam, check_finite: bool):
    checks.tensor("rewards", rewards, 2, checks.FLOAT_DTYPES)
    named = [
        ("values", values, checks.FLOAT_DTYPES),
        ("mask", mask, checks.MASK_DTYPES),
        ("turn_ids", turn_ids, checks.INT_DTYPES),
    ]
    for name, x, dtypes in named:
        if x is not None:
            checks.tensor(name, x, 2, dtypes)
            checks.same_shape(name, x, rewards.shape, "rewards")
            checks.same_device(name, x, rewards.device, "rewards")
    checks.unit_interval("gamma", gamma)
    checks.unit_interval("lam", lam)
    if check_finite:
        checks.finite("rewards", rewards)
        if values is not None:
            checks.finite("values", values)
        checks.finite("mask", mask)
    return float(gamma), float(lam)


def _answer(outputs: tuple, keep: torch.Tensor, want_moments: bool, partials: torch.Tensor | None):
    if not want_moments:
        return outputs
    stats = moments_from_partials(partials) if partials is not None else masked_moments_torch(outputs[0], keep)
    return (*outputs, stats)


def gae(
    rewards,
    values,
    mask,
    gamma: float,
    lam: float,
    *,
    moments: bool = False,
    backend: str | None = None,
    check_finite: bool = True,
):
    """Token-level GAE -> ``(advantages, returns)``, float32 ``[B, T]``; ``moments=True`` appends ``Moments``."""
    if values is None:
        raise ValueError("values must be a torch.Tensor, got NoneType")
    gamma, lam = _check(rewards, values, mask, None, gamma, lam, check_finite)
    if choose(rewards.device, backend) == "triton":
        from turnrl.kernels.advantages_triton import gae_triton

        adv, ret, partials = gae_triton(rewards, values, mask, gamma, lam)
        return _answer((adv, ret), mask != 0, moments, partials)
    return _answer(_gae_torch(rewards, values, mask, gamma, lam), mask != 0, moments, None)


def turn_gae(
    rewards,
    values,
    mask,
    turn_ids,
    gamma: float,
    lam: float,
    *,
    moments: bool = False,
    backend: str | None = None,
    check_finite: bool = True,
):
    """Turn-level GAE -> ``(advantages, returns)``, float32 ``[B, T]``; ``moments=True`` appends ``Moments``."""
    for name, x in (("values", values), ("turn_ids", turn_ids)):
        if x is None:
            raise ValueError(f"{name} must be a torch.Tensor, got NoneType")
    gamma, lam = _check(rewards, values, mask, turn_ids, gamma, lam, check_finite)
    keep = (mask != 0) & (turn_ids >= 0)
    if choose(rewards.device, backend) == "triton":
        from turnrl.kernels.advantages_triton import turn_gae_triton

        adv, ret, partials = turn_gae_triton(rewards, values, mask, turn_ids, gamma, lam)
        return _answer((adv, ret), keep, moments, partials)
    return _answer(_turn_gae_torch(rewards, values, mask, turn_ids, gamma, lam), keep, moments, None)


def discounted_returns(
    rewards, mask, gamma: float, *, moments: bool = False, backend: str | None = None, check_finite: bool = True
):
    """REINFORCE++ returns, float32 ``[B, T]``; ``moments=True`` gives ``(returns, Moments)``."""
    gamma, _ = _check(rewards, None, mask, None, gamma, 1.0, check_finite)
    if choose(rewards.device, backend) == "triton":
        from turnrl.kernels.advantages_triton import discounted_returns_triton

        returns, partials = discounted_returns_triton(rewards, mask, gamma)
        out = _answer((returns,), mask != 0, moments, partials)
    else:
        out = _answer((_discounted_returns_torch(rewards, mask, gamma),), mask != 0, moments, None)
    return out if moments else out[0]
