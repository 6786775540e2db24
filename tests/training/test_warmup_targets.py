"""The warm-up's reply targets: the random player's own next-token distribution ("listed") against the token it
wrote ("sampled"). The two are one objective in expectation; the listed one has no sampling noise."""

from __future__ import annotations

import math
import random

import pytest
import torch

from turnrl.config.model import WarmupConfig
from turnrl.engine.training.batch import pack, policy_logprobs
from turnrl.engine.training.warmup import (
    RandomEpisode,
    episode_to_trajectory,
    listed_targets,
    random_episodes,
    warmup_logprob_sum,
)
from turnrl.envs.babyai import BabyAIEnv
from turnrl.models.constraints import next_token_shares


def _random_completions(rng: random.Random) -> list[list[int]]:
    """Token lists ending with an end token (9), as replies end with end-of-turn: none is a prefix of another."""
    return [[rng.randint(0, 3) for _ in range(rng.randint(0, 4))] + [9] for _ in range(rng.randint(1, 9))]


@pytest.mark.parametrize("seed", range(8))
def test_shares_multiply_to_the_uniform_players_probability(seed):
    """Chain rule: along any completion the shares multiply to its multiplicity over the number of completions."""
    rng = random.Random(seed)
    completions = _random_completions(rng)
    for c in completions:
        product = 1.0
        for i in range(len(c)):
            shares = next_token_shares(completions, c[:i])
            assert math.isclose(sum(shares.values()), 1.0)
            product *= shares[c[i]]
        assert product * len(completions) == pytest.approx(completions.count(c))


def test_shares_of_a_prefix_nothing_continues_are_empty():
    assert next_token_shares([[1, 2], [1, 3]], [2]) == {}
    assert next_token_shares([[1, 2], [1, 2], [1, 3]], [1]) == {2: pytest.approx(2 / 3), 3: pytest.approx(1 / 3)}


def test_random_episodes_record_the_list_each_reply_was_drawn_from():
    env = BabyAIEnv("GoToLocal")
    for episode in random_episodes(env, [3, 8, 21], turn_cap=3, seed=1):
        assert len(episode.listed) == len(episode.replies)
        for reply, listed in zip(episode.replies, episode.listed, strict=True):
            assert reply in listed


def _one_turn(env: BabyAIEnv, item: int, reply: str, listed: list[str]) -> RandomEpisode:
    return RandomEpisode(env.system_prompt, [env.reset_sync(item)], [reply], listed=[listed])


@pytest.mark.parametrize("item", [3, 17])
def test_listed_targets_are_the_sampled_objective_in_expectation(item, chat, make_tiny_model):
    """Averaged over every reply the random player could write, the listed targets' log-likelihood equals the
    written tokens' (reply tokens only, one turn, so the context is the same for every reply)."""
    env = BabyAIEnv("GoToLocal")
    env.reset_sync(item)
    listed = [env.format_reply(a) for a in env.valid_actions_sync()]
    model = make_tiny_model(seed=item)
    model.eval()
    config = {mode: WarmupConfig(reply_targets=mode, observation_loss=False) for mode in ("sampled", "listed")}
    totals = {"sampled": 0.0, "listed": 0.0}
    per_reply = []
    with torch.no_grad():
        for reply in listed:
            trajectory = episode_to_trajectory(chat, _one_turn(env, item, reply, listed))
            values = {
                m: float(warmup_logprob_sum(model, [trajectory], c, chat.tokenizer.pad_token_id))
                for m, c in config.items()
            }
            per_reply.append(values)
            for mode, value in values.items():
                totals[mode] += value / len(listed)
    assert totals["listed"] == pytest.approx(totals["sampled"], rel=1e-5)
    assert any(abs(v["listed"] - v["sampled"]) > 1e-3 for v in per_reply)  # equal on average, not reply by reply


def test_sampled_targets_are_the_written_tokens_log_likelihood(chat, make_tiny_model):
    env = BabyAIEnv("GoToLocal")
    trajectories = [episode_to_trajectory(chat, e) for e in random_episodes(env, [2, 5, 9], turn_cap=3, seed=4)]
    model = make_tiny_model(seed=3)
    model.eval()
    pad = chat.tokenizer.pad_token_id
    with torch.no_grad():
        for observation_loss in (False, True):
            got = warmup_logprob_sum(model, trajectories, WarmupConfig(observation_loss=observation_loss), pad)
            batch = pack(trajectories, None, pad)
            batch.constraint_index = None  # the written tokens, not renormalised over the list
            if observation_loss:
                batch.loss_mask = batch.attention_mask.bool()
                batch.loss_mask[:, 0] = False
            logp, _, _ = policy_logprobs(model, batch)
            assert float(got) == pytest.approx(float((logp * batch.loss_mask).sum()), rel=1e-5)


def test_listed_targets_cover_every_reply_token(chat):
    env = BabyAIEnv("GoToLocal")
    trajectories = [episode_to_trajectory(chat, e) for e in random_episodes(env, [2, 5], turn_cap=3, seed=0)]
    index, ids, shares = listed_targets(trajectories)
    expected = [(r, p) for r, t in enumerate(trajectories) for p, m in enumerate(t.loss_mask) if m]
    assert sorted(map(tuple, index.tolist())) == expected
    assert torch.allclose(shares.sum(-1), torch.ones(len(expected)))
    assert bool(((ids >= 0) | (shares == 0)).all())


def test_a_reply_off_its_list_or_without_one_is_refused(chat):
    env = BabyAIEnv("GoToLocal")
    env.reset_sync(3)
    listed = [env.format_reply(a) for a in env.valid_actions_sync()]
    off = episode_to_trajectory(chat, _one_turn(env, 3, env.format_reply("go to purple ball 9"), listed))
    with pytest.raises(ValueError, match="not one of the replies"):
        listed_targets([off])
    bare = episode_to_trajectory(chat, RandomEpisode(env.system_prompt, [env.reset_sync(3)], [listed[0]]))
    with pytest.raises(ValueError, match=r"Turn\.listed"):
        listed_targets([bare])
    with pytest.raises(ValueError, match="reply_targets"):
        WarmupConfig(reply_targets="oracle")
