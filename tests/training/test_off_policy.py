"""Tokens sampled by older weights: the decoupled objective and truncated importance sampling, and the one
sampling temperature the learner computes every ratio at."""

from __future__ import annotations

import copy

import pytest
import torch

from turnrl.algorithms.policy_loss import clipped_surrogate
from turnrl.config.algo import LearnerConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.config.toml_file import load
from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.rollout.run import EnvPool, run_episodes
from turnrl.engine.training.learner import Learner
from turnrl.envs.babyai import BabyAIEnv
from turnrl.protocol import Task


async def _rollouts(model, tokenizer, chat, temperature: float = 1.0):
    generator = LocalGenerator(model, tokenizer.pad_token_id, use_thread=False, seed=3)
    tasks = [Task(env="babyai", item_id=item, group=g) for g, item in enumerate([3, 10, 11, 12]) for _ in range(4)]
    config = EpisodeConfig(turn_cap=3, max_new_tokens=6, temperature=temperature)
    trajectories = await run_episodes(tasks, EnvPool(lambda: BabyAIEnv("GoToLocal")), generator, chat, config)
    await generator.close()
    return trajectories


def _params(model):
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def test_token_weights_scale_each_tokens_loss():
    torch.manual_seed(0)
    logp, old = torch.randn(3, 7) * 0.1 - 1, torch.randn(3, 7) * 0.1 - 1
    adv, mask = torch.randn(3, 7), torch.rand(3, 7) > 0.3
    weights = torch.rand(3, 7) * 2
    plain, _ = clipped_surrogate(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    weighted, _ = clipped_surrogate(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, token_weights=weights)
    ratio = torch.exp(logp - old)
    per_token = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.28))
    assert torch.allclose(plain, (per_token * mask).sum() / mask.sum())
    assert torch.allclose(weighted, (per_token * weights * mask).sum() / mask.sum())


@pytest.mark.parametrize("mode", ["decoupled", "truncated_is"])
async def test_on_policy_tokens_make_the_corrections_the_plain_objective(tiny_model, tokenizer, chat, mode):
    trajectories = await _rollouts(tiny_model, tokenizer, chat)
    twin = copy.deepcopy(tiny_model)
    config = dict(lr=1e-3, lr_warmup_steps=0, minibatches=1)
    plain = Learner(tiny_model, LearnerConfig(**config), tokenizer.pad_token_id, seed=0)
    corrected = Learner(twin, LearnerConfig(**config, off_policy=mode), tokenizer.pad_token_id, seed=0)
    stats = corrected.update(trajectories)
    plain.update(trajectories)
    assert stats["is_weight_mean"] == pytest.approx(1.0, abs=1e-4) and stats["behaviour_gap"] < 1e-4
    assert torch.allclose(_params(tiny_model), _params(twin), atol=1e-6)


async def test_stale_tokens_are_weighted_by_proximal_over_behaviour(tiny_model, tokenizer, chat):
    trajectories = await _rollouts(tiny_model, tokenizer, chat)  # the behaviour policy: the weights of now
    with torch.no_grad():  # the learner moved on since (as with eta > 0)
        gen = torch.Generator().manual_seed(1)
        for p in tiny_model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    learner = Learner(tiny_model, LearnerConfig(off_policy="decoupled", minibatches=1), tokenizer.pad_token_id)
    batch, stats = learner.prepare(trajectories)
    mask = batch.loss_mask
    expected = torch.exp(batch.proximal_logprobs - batch.old_logprobs)[mask]
    assert torch.allclose(batch.is_weights[mask], expected, atol=1e-5)
    assert stats["behaviour_gap"] > 1e-3 and stats["is_truncated_frac"] == 0.0
    assert not bool(batch.is_weights[~mask].any())
    capped = Learner(tiny_model, LearnerConfig(off_policy="truncated_is", is_cap=1.01), tokenizer.pad_token_id)
    batch, stats = capped.prepare(trajectories)
    assert float(batch.is_weights[mask].max()) <= 1.01 + 1e-6
    assert stats["is_truncated_frac"] == pytest.approx(float((expected > 1.01).float().mean()), abs=1e-6)
    assert stats["is_truncated_frac"] > 0


async def test_the_learner_computes_ratios_at_the_sampling_temperature(tiny_model, tokenizer, chat):
    trajectories = await _rollouts(tiny_model, tokenizer, chat, temperature=0.7)
    right = Learner(
        copy.deepcopy(tiny_model), LearnerConfig(lr=1e-9, minibatches=1), tokenizer.pad_token_id, temperature=0.7
    )
    wrong = Learner(
        copy.deepcopy(tiny_model), LearnerConfig(lr=1e-9, minibatches=1), tokenizer.pad_token_id, temperature=1.0
    )
    assert right.update(trajectories)["approx_kl"] < 1e-6  # the first step's ratio is 1 at the sampling T
    assert wrong.update(trajectories)["approx_kl"] > 1e-3
    with pytest.raises(ValueError, match="sampling temperature"):
        Learner(tiny_model, LearnerConfig(), tokenizer.pad_token_id, temperature=0.0)


def test_a_learner_temperature_is_refused_in_a_config(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[algo.learner]\ntemperature = 0.7\n")
    with pytest.raises(ValueError, match="temperature"):
        load(path)
    with pytest.raises(ValueError, match="off_policy"):
        LearnerConfig(off_policy="vtrace")
    with pytest.raises(ValueError, match="is_cap"):
        LearnerConfig(is_cap=0.5)
