"""GRPO advantages and the clipped surrogate on hand-computed examples, gradients by finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from turnrl.algorithms import algorithm_names, get_advantage_estimator, get_policy_loss
from turnrl.algorithms.base import advantage_inputs
from turnrl.algorithms.policy_loss import aggregate, clipped_surrogate
from turnrl.algorithms.value_loss import clipped_value_loss
from turnrl.config.algo import AdvantageParams
from turnrl.kernels import discounted_returns, gae
from turnrl.protocol import Task, Trajectory


def _traj(task, reward, mask, turn_ends=None):
    from turnrl.protocol import Turn

    n = len(mask)
    ends = turn_ends or [max(i for i, m in enumerate(mask) if m) + 1]
    turns = [Turn(action_start=e - 1, action_end=e, action_text="a", observation="o", reward=reward) for e in ends]
    return Trajectory(
        task=task,
        token_ids=list(range(n)),
        loss_mask=mask,
        logprobs=[0.0] * n,
        versions=[0] * n,
        prompt_len=1,
        reward=reward,
        turns=turns,
    )


def _inputs(trajs, per_turn=False):
    width = max(len(t.token_ids) for t in trajs)
    mask = torch.zeros(len(trajs), width, dtype=torch.bool)
    for i, t in enumerate(trajs):
        mask[i, : len(t.loss_mask)] = torch.tensor(t.loss_mask, dtype=torch.bool)
    return advantage_inputs(trajs, mask, torch.zeros(mask.shape), per_turn)


def _estimate(name, trajs, **params):
    return get_advantage_estimator(name).fn(_inputs(trajs), AdvantageParams(**params))


def test_grpo_hand_computed():
    a, b = Task(env="e", item_id=1, group=0), Task(env="e", item_id=1, group=1)
    trajs = [
        _traj(a, 1.0, [0, 1, 1]),
        _traj(a, 0.0, [0, 1, 0, 1]),
        _traj(a, 0.5, [0, 1]),
        _traj(b, 0.2, [0, 1]),  # same item, other group: never mixed with group a
        _traj(b, 0.2, [0, 0, 1]),
    ]
    adv = _estimate("grpo", trajs).advantages
    # group a: mean 0.5, unbiased std 0.5 -> (1, -1, 0); group b: zero variance -> 0
    s = 0.5 / (0.5 + 1e-6)
    assert torch.allclose(adv[0], torch.tensor([0.0, s, s, 0.0]))
    assert torch.allclose(adv[1], torch.tensor([0.0, -s, 0.0, -s]))
    assert torch.allclose(adv[2], torch.zeros(4))
    assert torch.equal(adv[3], torch.zeros(4)) and torch.equal(adv[4], torch.zeros(4))


def test_dr_grpo_and_singletons():
    a = Task(env="e", item_id=1)
    trajs = [_traj(a, 3.0, [0, 1]), _traj(a, 1.0, [0, 1]), _traj(Task(env="e", item_id=2), 9.0, [0, 1])]
    adv = _estimate("grpo", trajs, scale_by_std=False).advantages
    assert adv[0].tolist() == [0.0, 1.0] and adv[1].tolist() == [0.0, -1.0]
    assert adv[2].tolist() == [0.0, 0.0]  # a group of one has nothing to compare with


def test_rloo_hand_computed():
    a = Task(env="e", item_id=1)
    trajs = [_traj(a, 1.0, [0, 1, 1]), _traj(a, 0.0, [0, 1, 0]), _traj(a, 0.5, [0, 1, 1])]
    adv = _estimate("rloo", trajs).advantages
    # baselines: mean of the others = 0.25, 0.75, 0.5
    assert torch.allclose(adv[0], torch.tensor([0.0, 0.75, 0.75]))
    assert torch.allclose(adv[1], torch.tensor([0.0, -0.75, 0.0]))
    assert torch.allclose(adv[2], torch.zeros(3))


def test_discounted_returns_and_gae_hand_computed():
    mask = torch.tensor([[0, 1, 1, 0, 1]], dtype=torch.bool)
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[9.0, 0.5, 0.4, 9.0, 0.6]])  # values on observation tokens are never read
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    assert torch.allclose(adv, torch.tensor([[0.0, 0.16816, 0.428, 0.0, 0.4]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.0, 0.66816, 0.828, 0.0, 1.0]]), atol=1e-6)
    g = discounted_returns(torch.tensor([[1.0, 5.0, 0.0, 2.0]]), torch.tensor([[1, 0, 1, 1]], dtype=torch.bool), 0.5)
    assert torch.allclose(g, torch.tensor([[1.5, 0.0, 1.0, 2.0]]))


def test_reinforce_pp_whitens_returns_and_folds_kl():
    a = Task(env="e", item_id=1)
    trajs = [_traj(a, 1.0, [0, 1, 1]), _traj(a, 0.0, [0, 1, 1])]
    out = _estimate("reinforce_pp", trajs).advantages
    # returns with gamma 1: row 0 -> [1, 1], row 1 -> [0, 0]; whitened over the 4 tokens: mean .5, std 1/sqrt(3)
    z = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    assert torch.allclose(out, torch.tensor([[0.0, z, z], [0.0, -z, -z]]), atol=1e-5)
    inputs = _inputs(trajs)
    inputs.old_logprobs = torch.tensor([[0.0, -1.0, -1.0], [0.0, -1.0, -1.0]])
    inputs.ref_logprobs = torch.tensor([[0.0, -1.0, -3.0], [0.0, -1.0, -1.0]])  # row 0 drifted on its last token
    out = get_advantage_estimator("reinforce_pp").fn(inputs, AdvantageParams(kl_reward_coef=0.5))
    # row 0 rewards: [0, 1 - 0.5 * 2] = [0, 0] -> returns [0, 0]; row 1 returns [0, 0]: nothing to whiten
    assert torch.allclose(out.advantages, torch.zeros(2, 3), atol=1e-6)
    with pytest.raises(ValueError, match="reference"):
        inputs.ref_logprobs = None
        get_advantage_estimator("reinforce_pp").fn(inputs, AdvantageParams(kl_reward_coef=0.5))


def test_ppo_uses_values_and_whitens():
    a = Task(env="e", item_id=1)
    trajs = [_traj(a, 1.0, [0, 1, 1]), _traj(a, 0.0, [0, 1, 1])]
    inputs = _inputs(trajs)
    inputs.values = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5]])
    out = get_advantage_estimator("ppo").fn(inputs, AdvantageParams(whiten=False))
    assert torch.allclose(out.advantages, torch.tensor([[0.0, 0.5, 0.5], [0.0, -0.5, -0.5]]))
    assert torch.allclose(out.returns, torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="values"):
        get_advantage_estimator("ppo").fn(_inputs(trajs), AdvantageParams())


def test_per_turn_rewards_sit_on_each_turns_last_token():
    traj = _traj(Task(env="e", item_id=1), 0.0, [0, 1, 1, 0, 1, 1], turn_ends=[3, 6])
    traj.turns[0].reward, traj.turns[1].reward = 0.25, 0.5
    traj.reward = 0.5  # "last" semantics
    last = _inputs([traj], per_turn=False).token_rewards
    summed = _inputs([traj], per_turn=True).token_rewards
    assert last.tolist() == [[0.0, 0.0, 0.0, 0.0, 0.0, 0.5]]
    assert summed.tolist() == [[0.0, 0.0, 0.25, 0.0, 0.0, 0.5]]


def test_value_loss_clipping_and_gradient():
    values = torch.tensor([[0.0, 1.0, 0.2]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[0.0, 0.5, 0.0]], dtype=torch.float64)
    ret = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1]], dtype=torch.bool)
    loss, stats = clipped_value_loss(values, old, ret, mask, clip=0.1, denominator=2)
    # token 1: v=1 -> (1-0)^2=1, clipped v=0.6 -> 0.36 -> max 1 ; token 2: v=.2 -> .64, clipped .1 -> .81 -> .81
    assert math.isclose(float(loss), 0.5 * (1.0 + 0.81) / 2, rel_tol=1e-9)
    assert stats["value_clip_frac"] == 0.5
    loss.backward()
    eps = 1e-6
    for j in (1, 2):
        bump = torch.zeros_like(values)
        bump[0, j] = eps
        up = clipped_value_loss(values.detach() + bump, old, ret, mask, 0.1, 2)[0]
        down = clipped_value_loss(values.detach() - bump, old, ret, mask, 0.1, 2)[0]
        assert math.isclose(float(values.grad[0, j]), float((up - down) / (2 * eps)), abs_tol=1e-6)
    with pytest.raises(ValueError):
        clipped_value_loss(values, old, ret, mask, clip=0.0, denominator=1)


def test_registry_errors():
    assert {"grpo", "ppo", "reinforce_pp", "rloo"} <= set(algorithm_names())
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
        return clipped_surrogate(x, old, adv, mask, clip_low=0.2, clip_high=0.28, aggregation="seq-mean-token-mean")[0]

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
