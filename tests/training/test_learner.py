"""The learner end to end on real rollouts: every estimator updates, the critic learns, the sign is right."""

from __future__ import annotations

import random

import msgspec
import pytest
import torch

from turnrl.config.algo import AdvantageParams, CriticConfig, LearnerConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.config.train import AlgoConfig
from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.rollout.run import EnvPool, run_episodes
from turnrl.engine.training.batch import pack, policy_logprobs
from turnrl.engine.training.learner import Learner
from turnrl.envs.babyai import BabyAIEnv
from turnrl.protocol import Task


@pytest.fixture()
async def rollouts(tiny_model, tokenizer, chat):
    generator = LocalGenerator(tiny_model, tokenizer.pad_token_id, use_thread=False)
    pool = EnvPool(lambda: BabyAIEnv("GoToLocal", layout="turnrl"))  # the layout the demo trains on
    tasks = [Task(env="babyai", item_id=item, group=g) for g, item in enumerate([3, 10, 11, 12]) for _ in range(4)]
    config = EpisodeConfig(turn_cap=3, max_new_tokens=4, constrain_to_valid_actions=True)
    trajectories = await run_episodes(tasks, pool, generator, chat, config)
    assert len({t.reward for t in trajectories}) > 1, "need reward variance for a meaningful update"
    return trajectories


def _params(model):
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce_pp", "ppo"])
def test_every_estimator_updates_the_policy(tiny_model, tokenizer, rollouts, estimator):
    learner = Learner(
        tiny_model,
        LearnerConfig(lr=1e-3, lr_warmup_steps=0, minibatches=2, micro_batch_tokens=700),
        tokenizer.pad_token_id,
        estimator=estimator,
        advantage=AdvantageParams(kl_reward_coef=0.01 if estimator == "reinforce_pp" else 0.0),
    )
    before = _params(tiny_model)
    stats = learner.update(rollouts)
    assert stats["optimizer_steps"] == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert not torch.equal(before, _params(tiny_model))
    if estimator == "ppo":
        assert "value_loss" in stats and learner.critic is not None
    if estimator == "reinforce_pp":
        assert learner.reference is not None


def test_positive_advantage_raises_the_sampled_tokens_probability(tiny_model, tokenizer, rollouts):
    learner = Learner(tiny_model, LearnerConfig(lr=1e-3, lr_warmup_steps=0, minibatches=1), tokenizer.pad_token_id)
    batch, _ = learner.prepare(rollouts)
    with torch.no_grad():
        before, _, _ = policy_logprobs(tiny_model, batch)
    learner.update(rollouts)
    with torch.no_grad():
        after, _, _ = policy_logprobs(tiny_model, batch)
    delta = (after - before) * batch.loss_mask
    signed = (delta * batch.advantages.sign()).sum()
    assert float(signed) > 0  # tokens with positive advantage gained, negative ones lost, on balance


def test_critic_learns_the_returns(tiny_model, tokenizer, rollouts):
    # one trajectory per task: the return is then a function of the prompt, which the critic can fit
    best = {}
    for traj in rollouts:
        if traj.task.group not in best or traj.reward > best[traj.task.group].reward:
            best[traj.task.group] = traj
    batch = list(best.values())
    assert any(t.reward > 0 for t in batch) and any(t.reward == 0 for t in batch)
    learner = Learner(
        tiny_model,
        LearnerConfig(lr=1e-5, lr_warmup_steps=0, minibatches=1),
        tokenizer.pad_token_id,
        estimator="ppo",
        critic=CriticConfig(lr=1e-3, value_clip=None),
    )
    losses = [learner.update(batch)["value_loss"] for _ in range(12)]
    assert losses[-1] < 0.25 * losses[0]


def test_shared_trunk_critic(tiny_model, tokenizer, rollouts):
    learner = Learner(
        tiny_model,
        LearnerConfig(lr=1e-3, lr_warmup_steps=0),
        tokenizer.pad_token_id,
        estimator="ppo",
        critic=CriticConfig(kind="head"),
    )
    assert learner.critic.shared and learner.critic_optimizer is None
    assert not any(p is q for p in learner.critic.parameters() for q in tiny_model.parameters())
    stats = learner.update(rollouts)
    assert stats["value_loss"] > 0


def test_zero_variance_groups_can_be_filtered(tiny_model, tokenizer, rollouts):
    learner = Learner(tiny_model, LearnerConfig(filter_zero_variance_groups=True), tokenizer.pad_token_id)
    batch, stats = learner.prepare(rollouts)
    groups = {}
    for i, t in enumerate(rollouts):
        groups.setdefault(t.task, []).append(i)
    flat = [i for members in groups.values() if len({rollouts[j].reward for j in members}) == 1 for i in members]
    assert stats["filtered_trajectories"] == len(flat)
    assert all(not bool(batch.loss_mask[i].any()) for i in flat)


@pytest.mark.parametrize("value", [-0.7, 0.0])
def test_invalid_replies_train_with_their_own_advantage(tiny_model, tokenizer, rollouts, value):
    rng = random.Random(int(value * 10))
    marked = []  # some turns flagged invalid, as the env flags a reply it could not perform
    for traj in rollouts:
        turns = [msgspec.structs.replace(t, valid=rng.random() < 0.4) for t in traj.turns]
        marked.append(msgspec.structs.replace(traj, turns=turns))
    plain, _ = Learner(tiny_model, LearnerConfig(), tokenizer.pad_token_id).prepare(marked)
    config = LearnerConfig(invalid_reply_advantage=value)
    batch, _ = Learner(tiny_model, config, tokenizer.pad_token_id).prepare(marked)
    invalid = torch.zeros_like(batch.loss_mask)
    for row, traj in enumerate(marked):
        for turn in traj.turns:
            if not turn.valid:
                invalid[row, turn.action_start : turn.action_end] = True
    invalid &= batch.loss_mask
    assert bool(invalid.any()) and bool((batch.loss_mask & ~invalid).any())
    assert torch.all(batch.advantages[invalid] == value)
    assert torch.equal(batch.advantages[~invalid], plain.advantages[~invalid])  # valid replies: their episode's


def test_kl_penalty_starts_at_zero(tiny_model, tokenizer, rollouts):
    learner = Learner(
        tiny_model, LearnerConfig(kl_coef=0.1, minibatches=1, lr=1e-3, lr_warmup_steps=0), tokenizer.pad_token_id
    )
    first = learner.update(rollouts)
    second = learner.update(rollouts)
    assert abs(first["ref_kl"]) < 1e-6 and second["ref_kl"] > 0


def test_learner_state_round_trip(tiny_model, tokenizer, rollouts):
    learner = Learner(tiny_model, LearnerConfig(lr_warmup_steps=3), tokenizer.pad_token_id, estimator="ppo")
    learner.update(rollouts)
    state = learner.state_dict()
    other = Learner(tiny_model, LearnerConfig(lr_warmup_steps=3), tokenizer.pad_token_id, estimator="ppo")
    other.load_state_dict(state)
    assert other.updates == learner.updates == 1
    assert other.scheduler.last_epoch == learner.scheduler.last_epoch
    for a, b in zip(other.critic.parameters(), learner.critic.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: AlgoConfig(name="a2c"), "unknown algorithm"),
        (lambda: LearnerConfig(clip_low=-0.1), "clip"),
        (lambda: LearnerConfig(aggregation="median"), "aggregation"),
        (lambda: LearnerConfig(dual_clip=0.9), "dual_clip"),
        (lambda: CriticConfig(kind="twin"), "critic.kind"),
        (lambda: AdvantageParams(gamma=1.5), "gamma"),
        (lambda: LearnerConfig(invalid_reply_advantage=float("nan")), "invalid_reply_advantage"),
    ],
)
def test_bad_algorithm_configs(build, needle):
    with pytest.raises(ValueError, match=needle):
        build()


def test_pack_keeps_rows_aligned(tokenizer, rollouts):
    batch = pack(rollouts, None, tokenizer.pad_token_id)
    sub = batch.select([3, 1])
    assert torch.equal(sub.input_ids[0, : len(rollouts[3].token_ids)], torch.tensor(rollouts[3].token_ids))
    assert sub.input_ids.shape[1] == max(len(rollouts[3].token_ids), len(rollouts[1].token_ids))
