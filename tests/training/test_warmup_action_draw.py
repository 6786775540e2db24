"""The warm-up's random player drawing by first word (``action_draw="first_word"``): every first word listed
carries the same mass, split evenly among its actions, and the listed reply targets follow that draw."""

from __future__ import annotations

import collections
import random

import msgspec
import pytest

from turnrl.config.model import DefaultModelConfig, WarmupConfig
from turnrl.engine.training.warmup import draw_pool, random_episodes
from turnrl.envs.textcraft import TextCraftEnv
from turnrl.models.constraints import next_token_shares


def _reference_probability(valid: list[str], action: str, first_word) -> float:
    """The draw as stated: a first word uniformly, then an action uniformly among those starting with it."""
    words = [first_word(a) for a in valid]
    word = first_word(action)
    return (1 / len(set(words))) * valid.count(action) / words.count(word)


def _first_word(action: str) -> str:
    return action.split(">")[0] + ">" if action.startswith("<") else action.split()[0]


@pytest.mark.parametrize("seed", range(6))
def test_first_word_pool_gives_each_word_equal_mass(seed):
    rng = random.Random(seed)
    verbs = ["get", "craft", "go", "<search>", "<answer>"][: rng.randint(1, 5)]
    valid = []
    for verb in verbs:
        for i in range(rng.randint(1, 6)):
            body = f"item {i}" if not verb.startswith("<") else f"span {i}</{verb[1:]}"
            valid.append(f"{verb}{'' if verb.startswith('<') else ' '}{body}")
    rng.shuffle(valid)
    pool = draw_pool(valid, "first_word")
    assert set(pool) == set(valid)
    counts = collections.Counter(pool)
    for action in valid:
        assert counts[action] / len(pool) == pytest.approx(_reference_probability(valid, action, _first_word))


def test_uniform_pool_is_the_list_itself():
    valid = ["get 1 a", "get 2 b", "craft 1 c using 1 a"]
    assert draw_pool(valid, "uniform") == valid
    assert draw_pool(valid, "first_word").count("craft 1 c using 1 a") == 2
    # the listed targets count the repeats: the first token's shares are the draw's, half "get", half "craft"
    vocab = {w: i for i, w in enumerate(dict.fromkeys(" ".join(valid).split()))}
    pool = draw_pool(valid, "first_word")
    shares = next_token_shares([[vocab[w] for w in a.split()] for a in pool], [])
    assert shares == {vocab["get"]: pytest.approx(0.5), vocab["craft"]: pytest.approx(0.5)}
    with pytest.raises(ValueError, match="unknown action_draw 'by_goal'"):
        draw_pool(valid, "by_goal")


def test_textcraft_warmup_plays_crafts_as_often_as_gets_when_both_are_listed():
    env = TextCraftEnv(max_depth=1, list_inventory=False, show_actions=True)
    items = list(range(0, 400, 3))
    seen = {"uniform": collections.Counter(), "first_word": collections.Counter()}
    for draw, counter in seen.items():
        for episode in random_episodes(env, items, turn_cap=8, seed=0, action_draw=draw):
            for reply, listed in zip(episode.replies, episode.listed, strict=True):
                assert reply in listed
                if any(r.startswith("Action: craft") for r in listed):
                    counter[reply.split()[1]] += 1
    uniform, first_word = seen["uniform"], seen["first_word"]
    share = first_word["craft"] / (first_word["craft"] + first_word["get"])
    assert 0.45 < share < 0.55  # a fair coin per turn; over hundreds of turns
    assert uniform["craft"] / (uniform["craft"] + uniform["get"]) < 0.4  # gets outnumber crafts in the listing


def test_action_draw_is_validated_and_defaults_to_uniform():
    assert WarmupConfig().action_draw == "uniform"
    with pytest.raises(ValueError, match="action_draw must be one of uniform, first_word"):
        WarmupConfig(action_draw="first")
    with pytest.raises(msgspec.ValidationError, match="action_draw"):
        msgspec.convert({"warmup": {"action_draw": "nope"}}, DefaultModelConfig)
