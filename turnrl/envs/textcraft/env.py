"""TextCraft as a turnrl env: craft a Minecraft item from the recipes you are shown.

Invariant: item id -> task is a pure function (``RecipeBook.task``), so the same
id gives the same first observation in any process. Item ids are AgentGym's by
default (``goals="agentgym"``: 544 goals, shallowest first, any id >= 0 taken
modulo 544 as AgentGym's server does); ``goals="deepest"`` keeps our earlier 419
(ids in ``[0, 419)``). ``max_depth=N`` (AgentGym's goals only) plays a deeper id as a
goal of depth <= N of the same split (``splits.capped_item``; ``info["item"]`` is the id
played). The first observation is AgentGym's: "Crafting
commands:\\n<recipes>\\n\\nGoal: craft <item>.". Step wording is AgentGym's by
default (``wording="agentgym"``: "Crafted 1 minecraft:yellow_wool", "Could not find
enough items to craft minecraft:x", nothing more on success); ``wording="names"``
keeps ours ("Crafted 1 yellow wool" and "The task is completed."). Actions:
``get N item`` (base items only), ``craft N item using a A, b B`` (the inputs
must match one recipe of the item exactly, a tag ingredient taking any item of
that tag, and be in the inventory) and ``inventory``. A command that cannot be
carried out changes nothing and has ``valid = False``. Reward 1 (and done) when
the goal item is crafted; ``info["score"]`` is that reward. ``show_actions=True`` (not
AgentGym's: its observations list nothing) ends every observation of a running episode with
"Available actions: " and the listed commands (``valid_actions``) joined by "; ".
"""

from __future__ import annotations

import re
from collections import Counter

from turnrl.envs.base import BlockingEnv, parse_action
from turnrl.envs.textcraft.recipes import GOAL_ORDERS, CraftRecipe, RecipeBook, item_id, item_name, recipe_book
from turnrl.envs.textcraft.splits import capped_item
from turnrl.protocol import EnvResult

SYSTEM_PROMPT = (
    "You are crafting Minecraft items. You are given crafting commands and a goal item. Each turn reply with "
    "one command as: Action: <command>. Commands: 'get N item' fetches a base item, 'craft N item using "
    "a A, b B' crafts by one of the given recipes (use concrete items, e.g. oak planks for planks), "
    "'inventory' lists what you hold."
)

GET = re.compile(r"get (\d+) (.+)")
CRAFT = re.compile(r"craft (?:(\d+) )?(.+?) using (.+)")
COUNTED = re.compile(r"(\d+) (.+)")
MAX_GET = 10**6
MAX_LISTED_ACTIONS = 64
WORDINGS = ("agentgym", "names")


class TextCraftEnv(BlockingEnv):
    family = "textcraft"
    system_prompt = SYSTEM_PROMPT

    def __init__(
        self,
        data_dir: str | None = None,
        goals: str = "agentgym",
        wording: str = "agentgym",
        max_depth: int | None = None,
        list_inventory: bool = True,
        show_actions: bool = False,
    ) -> None:
        if goals not in GOAL_ORDERS:
            raise ValueError(f"unknown goals {goals!r}; choose from: {', '.join(GOAL_ORDERS)}")
        if wording not in WORDINGS:
            raise ValueError(f"unknown wording {wording!r}; choose from: {', '.join(WORDINGS)}")
        if max_depth is not None and (goals != "agentgym" or type(max_depth) is not int or max_depth < 1):
            raise ValueError(f"max_depth must be an int >= 1 with goals='agentgym', got {max_depth!r} ({goals!r})")
        self.book: RecipeBook = recipe_book(data_dir)
        if not isinstance(list_inventory, bool):
            raise ValueError(f"list_inventory must be a bool, got {list_inventory!r}")
        self.goal_order, self.wording, self.max_depth = goals, wording, max_depth
        self.list_inventory = list_inventory
        if not isinstance(show_actions, bool):
            raise ValueError(f"show_actions must be a bool, got {show_actions!r}")
        self.show_actions = show_actions
        self._depths = tuple(d for _, d in self.book.goal_lists[goals])
        self.inventory: Counter[str] = Counter()
        self.goal = ""
        self._recipes: tuple[CraftRecipe, ...] = ()
        self._done = True
        self._item = -1

    @property
    def num_items(self) -> int:
        return len(self.book.goal_lists[self.goal_order])

    def reset_sync(self, item_id: int) -> str:
        if self.goal_order == "agentgym" and item_id >= 0:
            item_id = item_id % self.num_items  # AgentGym's server takes any id modulo its goal count
        if not 0 <= item_id < self.num_items:
            raise ValueError(f"item_id must be in [0, {self.num_items}), got {item_id}")
        if self.max_depth is not None:
            item_id = capped_item(item_id, self.max_depth, self._depths)
        task = self.book.task(int(item_id), self.goal_order)
        self._item, self.goal, self._recipes = int(item_id), task.goal, task.recipes
        self.inventory = Counter()
        self._done = False
        commands = "\n".join(r.text for r in self._recipes)
        return self._with_listing(f"Crafting commands:\n{commands}\n\nGoal: craft {item_name(self.goal)}.")

    def reset_custom(self, commands: str, goal: str) -> str:
        """Start an episode on a caller's task (AgentGym's ``/create {commands, goal}``): the shown commands
        are ``commands`` as given; crafting follows the recipe book (the listing and the oracle use the
        goal's own recipes). ``goal`` is an item id
        (``minecraft:stick``) or name (``stick``) of a craftable item, else ``ValueError``."""
        target = goal.strip() if goal.strip().startswith("minecraft:") else item_id(goal)
        if not self.book.by_output.get(target):
            raise ValueError(f"goal {goal!r} is not a craftable item")
        if not commands.strip():
            raise ValueError("commands must not be empty")
        self._item, self.goal = -1, target
        self._recipes = self.book.task_for(target, 0, 0).recipes  # what the oracle and the listing use
        self.inventory = Counter()
        self._done = False
        return self._with_listing(f"Crafting commands:\n{commands.strip()}\n\nGoal: craft {item_name(self.goal)}.")

    @property
    def recipes(self) -> tuple[CraftRecipe, ...]:
        """The recipes shown in this episode's first observation."""
        return self._recipes

    def step_sync(self, action_text: str) -> EnvResult:
        if self._done:
            raise RuntimeError("step() after the episode ended; call reset() first")
        action = parse_action(action_text)
        if action is None:
            return self._result('Reply with "Action: <command>".', False)
        if action == "inventory":
            return self._result(self._inventory_text(), True)
        if m := GET.fullmatch(action):
            return self._get(int(m.group(1)), m.group(2))
        if m := CRAFT.fullmatch(action):
            return self._craft(m.group(2), m.group(3))
        return self._result(f"Could not execute {action}", False)

    def valid_actions_sync(self) -> list[str]:
        """``inventory`` (unless ``list_inventory=False``: it changes nothing, and a random-action warm-up
        would make it the commonest reply), the ``get`` commands for base items the shown recipes use, and
        the ``craft`` commands the inventory allows now (at most ``MAX_LISTED_ACTIONS``). ``inventory`` is
        carried out either way."""
        actions = ["inventory"] if self.list_inventory else []
        for recipe in self._recipes:
            for ingredient in recipe.inputs:
                command = f"get {ingredient.count} {item_name(ingredient.name)}"
                if self.book.fetchable(ingredient.name) and command not in actions:
                    actions.append(command)
        for recipe in self._recipes:
            chosen = self._choose_inputs(recipe)
            if chosen is not None:
                used = ", ".join(f"{count} {item_name(item)}" for item, count in chosen)
                actions.append(f"craft {recipe.output_count} {item_name(recipe.output)} using {used}")
        return actions[:MAX_LISTED_ACTIONS]

    # ---- commands ----------------------------------------------------------------
    def _get(self, count: int, name: str) -> EnvResult:
        item = item_id(name)
        if not 0 < count <= MAX_GET:
            return self._result(f"Could not get {count} {name}: the count must be in [1, {MAX_GET}]", False)
        if not self.book.fetchable(item):
            return self._result(f"Could not find {name}", False)
        self.inventory[item] += count
        return self._result(f"Got {count} {name}", True)

    def _craft(self, name: str, inputs_text: str) -> EnvResult:
        output = item_id(name)
        given: list[tuple[str, int]] = []
        for part in inputs_text.split(","):
            m = COUNTED.fullmatch(part.strip())
            if m is None:
                return self._result(f"Wrong item format: {part.strip()}", False)
            given.append((item_id(m.group(2)), int(m.group(1))))
        recipe = next((r for r in self.book.by_output.get(output, ()) if self._matches(r, given)), None)
        if recipe is None:
            return self._result(f"Could not find a valid recipe for {name} using {inputs_text}", False)
        if any(self.inventory[item] < count for item, count in given):
            shown = output if self.wording == "agentgym" else name
            return self._result(f"Could not find enough items to craft {shown}", False)
        for item, count in given:
            self.inventory[item] -= count
            if self.inventory[item] == 0:
                del self.inventory[item]
        self.inventory[output] += recipe.output_count
        crafted = f"Crafted {recipe.output_count} {output if self.wording == 'agentgym' else name}"
        if output == self.goal:
            self._done = True
            return self._result(
                crafted if self.wording == "agentgym" else f"{crafted}\nThe task is completed.", True, 1.0
            )
        return self._result(crafted, True)

    def _matches(self, recipe: CraftRecipe, given: list[tuple[str, int]]) -> bool:
        """Do the given (item, count) pairs fill the recipe's ingredients one to one, counts equal?"""
        if len(given) != len(recipe.inputs) or len({item for item, _ in given}) != len(given):
            return False
        free = list(given)
        for ingredient in recipe.inputs:
            hit = next((g for g in free if g[1] == ingredient.count and self.book.fits(ingredient, g[0])), None)
            if hit is None:
                return False
            free.remove(hit)
        return True

    def _choose_inputs(self, recipe: CraftRecipe) -> list[tuple[str, int]] | None:
        """Concrete inventory items that fill ``recipe`` now (None if the inventory cannot)."""
        chosen: list[tuple[str, int]] = []
        for ingredient in recipe.inputs:
            item = next(
                (
                    i
                    for i, n in sorted(self.inventory.items())
                    if n >= ingredient.count and self.book.fits(ingredient, i) and i not in dict(chosen)
                ),
                None,
            )
            if item is None:
                return None
            chosen.append((item, ingredient.count))
        return chosen

    def _inventory_text(self) -> str:
        if not self.inventory:
            return "Inventory: You are not carrying anything."
        return "Inventory: " + " ".join(f"[{item_name(i)}] ({n})" for i, n in sorted(self.inventory.items()))

    def _result(self, text: str, valid: bool, reward: float = 0.0) -> EnvResult:
        info = {
            "success": reward > 0,
            "score": reward,
            "valid": valid,
            "goal": item_name(self.goal),
            "item": self._item,
        }
        return EnvResult(observation=self._with_listing(text), reward=reward, done=self._done, info=info)

    def _with_listing(self, text: str) -> str:
        """With ``show_actions`` and the episode still on, ``text`` then the commands listed now, each after
        "; " (a ``craft`` command has commas of its own), written exactly as a reply would carry them."""
        if not self.show_actions or self._done:
            return text
        return f"{text}\nAvailable actions: {'; '.join(self.valid_actions_sync())}"
