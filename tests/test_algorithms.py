"""GRPO advantages and the clipped surrogate on hand-computed examples, gradients by finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from turnrl.algorithms import algorithm_names, get_advantage_estimator, get_policy_loss
from turnrl.algorithms.policy_loss import aggregate, clipped_surrogate
from turnrl.protocol import Task, Trajectory


def _traj(task, reward, mask):
    n = len(mask)
    return Trajectory(task=task, token_ids=list(range(n)), loss_mask=mask, logprobs=[0.0] * n,
                      versions=[0] * n, prompt_len=1, reward=reward)


def test_grpo_hand_computed():
    a, b = Task(env="e", item_id=1, group=0), Task(env="e", item_id=1, group=1)
    trajs = [
        _traj(a, 1.0, [0, 1, 1]),
        _traj(a, 0.0, [0, 1, 0, 1]),
        _traj(a, 0.5, [0, 1]),
        _traj(b, 0.2, [0, 1]),  # same item, other group: never mixed with group a
        _traj(b, 0.2, [0, 0, 1]),
    ]
    adv = get_advantage_estimator("grpo")(trajs)
    # group a: mean 0.5, unbiased std 0.5 -> (1, -1, 0); group b: zero variance -> 0
    s = 0.5 / (0.5 + 1e-6)
    assert torch.allclose(adv[0], torch.tensor([0.0, s, s]))
    assert torch.allclose(adv[1], torch.tensor([0.0, -s, 0.0, -s]))
    assert torch.allclose(adv[2], torch.tensor([0.0, 0.0]))
    assert torch.equal(adv[3], torch.zeros(2)) and torch.equal(adv[4], torch.zeros(3))


def test_dr_grpo_and_singletons():
    from turnrl.algorithms.grpo import grpo

    a = Task(env="e", item_id=1)
    trajs = [_traj(a, 3.0, [0, 1]), _traj(a, 1.0, [0, 1]), _traj(Task(env="e", item_id=2), 9.0, [0, 1])]
    adv = grpo(trajs, scale_by_std=False)
    assert adv[0].tolist() == [0.0, 1.0] and adv[1].tolist() == [0.0, -1.0]
    assert adv[2].tolist() == [0.0, 0.0]  # a group of one has nothing to compare with


def test_registry_errors():
    assert "grpo" in algorithm_names()
    with pytest.raises(ValueError, match="unknown algorithm 'ppo2'"):
        get_advantage_estimator("ppo2")
    with pytest.raises(ValueError, match="unknown policy loss"):
        get_policy_loss("nope")


def test_clipped_surrogate_hand_computed():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 2.0]]))
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, 1.0, -1.0, -2.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = clipped_surrogate(logp, old, adv, mask, clip_low=0.2, clip_high=0.3)
    # token 0: ratio 1.5, A=1 -> -min(1.5, 1.3) = -1.3 ; token 1: ratio 0.5, A=1 -> -min(0.5, 0.8) = -0.5
    # token 2: ratio 1.1, A=-1 -> -min(-1.1, -1.1) = 1.1 ; token 3 masked
    assert math.isclose(float(loss), (-1.3 - 0.5 + 1.1) / 3, rel_tol=1e-6)
    assert math.isclose(stats["clip_frac"], 1 / 3, rel_tol=1e-6)


def test_dual_clip_caps_negative_advantage_loss():
    logp = torch.log(torch.tensor([[10.0]]))
    loss, _ = clipped_surrogate(logp, torch.zeros(1, 1), torch.tensor([[-1.0]]), torch.ones(1, 1), dual_clip=3.0)
    assert math.isclose(float(loss), 3.0, rel_tol=1e-6)  # instead of ratio * |A| = 10
    with pytest.raises(ValueError):
        clipped_surrogate(logp, logp, logp, torch.ones(1, 1), dual_clip=0.5)
    with pytest.raises(ValueError):
        clipped_surrogate(logp, logp, logp, torch.ones(1, 1), clip_low=-0.1)


def test_aggregations():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert float(aggregate(values, mask, "token-mean", 3)) == pytest.approx(7 / 3)
    assert float(aggregate(values, mask, "seq-mean-token-sum", 2)) == pytest.approx((3 + 4) / 2)
    assert float(aggregate(values, mask, "seq-mean-token-mean", 2)) == pytest.approx((1.5 + 4) / 2)
    with pytest.raises(ValueError):
        aggregate(values, mask, "median", 1)


def test_loss_gradient_matches_finite_differences():
    torch.manual_seed(0)
    logp = (torch.randn(2, 5, dtype=torch.float64) * 0.3).requires_grad_()
    old = torch.randn(2, 5, dtype=torch.float64) * 0.3
    adv = torch.randn(2, 5, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1, 1], [0, 1, 1, 1, 0]])

    def f(x):
        return clipped_surrogate(x, old, adv, mask, clip_low=0.2, clip_high=0.28,
                                 aggregation="seq-mean-token-mean")[0]

    f(logp).backward()
    eps = 1e-6
    numeric = torch.zeros_like(logp)
    for i in range(2):
        for j in range(5):
            bump = torch.zeros_like(logp)
            bump[i, j] = eps
            numeric[i, j] = (f(logp.detach() + bump) - f(logp.detach() - bump)) / (2 * eps)
    assert torch.allclose(logp.grad, numeric, atol=1e-6)
    assert torch.all(logp.grad[mask == 0] == 0)
