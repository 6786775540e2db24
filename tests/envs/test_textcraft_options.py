"""TextCraft's options: the depth cap (``max_depth``: item id -> goal stays pure, the splits stay disjoint, bad
values refused), ``list_inventory`` (the listing without ``inventory``, the command still carried out) and
``show_actions`` (the listing written at the end of every observation while the episode runs)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from turnrl.envs import get_env_spec
from turnrl.envs.textcraft import SPLITS, TextCraftEnv
from turnrl.envs.textcraft.oracle import plan
from turnrl.envs.textcraft.recipes import recipe_book
from turnrl.envs.textcraft.splits import NUM_ITEMS, TEST, TRAIN, capped_item

DEPTHS = tuple(d for _, d in recipe_book().goal_lists["agentgym"])


def _reference(item: int, max_depth: int, depths) -> int:
    """The documented rule, written out independently: rank among the split's deeper ids, modulo its shallow ids."""
    split = sorted(TEST) if item in set(TEST) else sorted(TRAIN)
    if depths[item] <= max_depth:
        return item
    shallow = [i for i in split if depths[i] <= max_depth]
    deep = [i for i in split if depths[i] > max_depth]
    return shallow[deep.index(item) % len(shallow)]


def test_capped_item_matches_the_rule_on_random_depths():
    rng = random.Random(7)
    for _ in range(3):
        depths = tuple(rng.randint(1, 4) for _ in range(NUM_ITEMS))
        for max_depth in (1, 2, 3):
            for item in rng.sample(range(NUM_ITEMS), 60):
                got = capped_item(item, max_depth, depths)
                assert got == _reference(item, max_depth, depths)
                assert depths[got] <= max_depth
                assert (got in TEST) == (item in TEST)  # never crosses the split


def test_splits_stay_disjoint_and_every_shallow_goal_is_played():
    for max_depth in (1, 2, 3):
        train = {capped_item(i, max_depth, DEPTHS) for i in TRAIN}
        test = {capped_item(i, max_depth, DEPTHS) for i in TEST}
        assert not train & test
        assert train == {i for i in TRAIN if DEPTHS[i] <= max_depth}
        assert test == {i for i in TEST if DEPTHS[i] <= max_depth}
    # the train ids spread evenly over the shallow ones (each played 4 or 5 times from 444 ids)
    counts = Counter(capped_item(i, 1, DEPTHS) for i in TRAIN)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_env_plays_the_capped_goal_and_categorizes_it():
    capped, plain = TextCraftEnv(max_depth=1), TextCraftEnv()
    spec = get_env_spec("textcraft")
    for item in (0, 130, 300, 540, 544 + 300):
        played = capped_item(item % NUM_ITEMS, 1, DEPTHS)
        assert capped.reset_sync(item) == plain.reset_sync(played)
        assert spec.categorize(item, {"max_depth": 1}) == "depth-1"
    assert spec.categorize(300, {}) == f"depth-{DEPTHS[300]}"
    # the first 23 test ids are exactly the depth-1 test goals
    assert [i for i in SPLITS.test if DEPTHS[i] == 1] == list(SPLITS.test[:23])


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_bad_max_depth_is_refused(bad):
    with pytest.raises(ValueError, match="max_depth"):
        TextCraftEnv(max_depth=bad)


def test_max_depth_needs_agentgym_goals_and_capped_item_checks_its_input():
    with pytest.raises(ValueError, match="max_depth"):
        TextCraftEnv(goals="deepest", max_depth=2)
    with pytest.raises(ValueError, match="item"):
        capped_item(NUM_ITEMS, 1, DEPTHS)
    with pytest.raises(ValueError, match="depths"):
        capped_item(0, 1, DEPTHS[:-1])
    with pytest.raises(ValueError, match="max_depth"):
        capped_item(0, 0, DEPTHS)


def test_list_inventory_false_drops_only_inventory_from_the_listing():
    listed, unlisted = TextCraftEnv(), TextCraftEnv(list_inventory=False)
    rng = random.Random(3)
    for item in rng.sample(range(NUM_ITEMS), 20):
        assert listed.reset_sync(item) == unlisted.reset_sync(item)
        for _ in range(4):
            full = listed.valid_actions_sync()
            assert full[0] == "inventory" and unlisted.valid_actions_sync() == full[1:]
            action = rng.choice(full[1:])
            assert listed.step_sync(f"Action: {action}") == unlisted.step_sync(f"Action: {action}")
            if listed._done:
                break
        if not listed._done:
            answer = unlisted.step_sync("Action: inventory")
            assert answer.info["valid"] and answer.observation.startswith("Inventory:")
    with pytest.raises(ValueError, match="list_inventory"):
        TextCraftEnv(list_inventory="no")


def test_show_actions_ends_each_running_observation_with_the_listing():
    shown, plain = TextCraftEnv(show_actions=True), TextCraftEnv()
    rng = random.Random(11)
    for item in rng.sample(range(NUM_ITEMS), 12):
        observations = [(shown.reset_sync(item), plain.reset_sync(item), plain.valid_actions_sync())]
        commands = plan(plain)
        assert commands, f"no plan for item {item}"
        for command in [commands[0], "craft 1 nothing using 1 air", *commands[1:]]:
            a, b = shown.step_sync(f"Action: {command}"), plain.step_sync(f"Action: {command}")
            assert (a.reward, a.done, a.info) == (b.reward, b.done, b.info)
            observations.append((a.observation, b.observation, plain.valid_actions_sync()))
        assert a.done and a.info["success"]
        *running, (last_shown, last_plain, _) = observations
        assert last_shown == last_plain  # the episode is over: nothing listed
        for with_listing, without, listed in running:
            head, listing = with_listing.rsplit("\nAvailable actions: ", 1)
            assert head == without and listing.split("; ") == listed
    with pytest.raises(ValueError, match="show_actions"):
        TextCraftEnv(show_actions=1)
