"""The format warm-up's item ids: drawn from the far end of the train split, wrapping around a short split."""

from __future__ import annotations

import random

import pytest

from turnrl.engine.training.warmup import warmup_items
from turnrl.envs import get_env_spec


@pytest.mark.parametrize("seed", range(5))
def test_items_walk_the_split_backwards_and_wrap(seed):
    rng = random.Random(seed)
    train = rng.sample(range(10_000), rng.randint(1, 40))
    episodes = rng.randint(1, 130)
    items = warmup_items(train, episodes)
    assert len(items) == episodes
    reference = list(reversed(train)) * (episodes // len(train) + 1)  # the split backwards, again and again
    assert items == reference[:episodes]


def test_more_episodes_than_textcraft_has_train_goals():
    train = get_env_spec("textcraft").splits.train
    items = warmup_items(train, 3 * len(train) + 5)
    assert set(items) == set(train)  # every train goal, never a test one
    assert items[: len(train)] == list(reversed(train))


def test_empty_split_is_refused():
    with pytest.raises(ValueError, match="non-empty train split"):
        warmup_items([], 3)
