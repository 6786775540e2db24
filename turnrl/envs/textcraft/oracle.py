"""A scripted TextCraft player that plans over the recipes the episode shows.

Invariant: the plan uses only the recipes listed in the first observation (read
back from the env's shown recipe list) and the book's item facts (which base
items can be fetched, which item carries which tag); it simulates the inventory
and emits the ``get``/``craft`` commands in order, so a success proves the goal
is reachable through the text interface with what the episode shows.
"""

from __future__ import annotations

import math
from collections import Counter

from turnrl.envs.textcraft.env import TextCraftEnv
from turnrl.envs.textcraft.recipes import CraftRecipe, Ingredient, RecipeBook, item_name

MAX_DEPTH = 12


class _Planner:
    def __init__(self, book: RecipeBook, shown: tuple[CraftRecipe, ...]) -> None:
        self.book = book
        self.shown = shown
        self.inventory: Counter[str] = Counter()
        self.commands: list[str] = []

    def producers(self, name: str) -> list[CraftRecipe]:
        return [r for r in self.shown if r.output == name or r.output_tag == name]

    def obtain(self, ingredient: Ingredient, count: int, depth: int = 0) -> str | None:
        """Make sure ``count`` of something fitting ``ingredient`` is held; return that item id."""
        for item, held in sorted(self.inventory.items()):
            if held >= count and self.book.fits(ingredient, item):
                return item
        if depth > MAX_DEPTH:
            return None
        if self.book.fetchable(ingredient.name):
            missing = count - self.inventory[ingredient.name]
            self.commands.append(f"get {missing} {item_name(ingredient.name)}")
            self.inventory[ingredient.name] += missing
            return ingredient.name
        for recipe in self.producers(ingredient.name):
            saved = (Counter(self.inventory), len(self.commands))
            if self.craft(recipe, count - self.inventory[recipe.output], depth + 1):
                return recipe.output
            self.inventory = saved[0]
            del self.commands[saved[1] :]
        return None

    def craft(self, recipe: CraftRecipe, count: int, depth: int) -> bool:
        times = math.ceil(count / recipe.output_count)
        chosen = []
        for ingredient in recipe.inputs:
            item = self.obtain(ingredient, ingredient.count * times, depth)
            if item is None:
                return False
            self.inventory[item] -= ingredient.count * times  # reserved: later siblings may not use it
            chosen.append((item, ingredient.count))
        used = ", ".join(f"{n} {item_name(item)}" for item, n in chosen)
        self.commands.extend([f"craft {recipe.output_count} {item_name(recipe.output)} using {used}"] * times)
        self.inventory[recipe.output] += recipe.output_count * times
        self.inventory = +self.inventory
        return True


def plan(env: TextCraftEnv) -> list[str] | None:
    """The commands that craft the current episode's goal (None if no plan is found)."""
    planner = _Planner(env.book, env.recipes)
    goal = Ingredient(name=env.goal, count=1, is_tag=False)
    return planner.commands if planner.obtain(goal, 1) is not None else None


def play(env: TextCraftEnv, item_id: int) -> tuple[bool, float, int]:
    """Reset to ``item_id`` and play the plan; returns (success, reward, turns)."""
    env.reset_sync(item_id)
    commands = plan(env) or []
    for turn, command in enumerate(commands, 1):
        result = env.step_sync(f"Action: {command}")
        if not result.info["valid"] or result.done:
            return bool(result.info["success"]), result.reward, turn
    return False, 0.0, len(commands)
