"""A scripted BabyAI player that acts only through the env's text actions.

Invariant: the oracle never touches the world directly; every move it makes is
one of the actions the env offers (so a success proves the level is solvable
through the text interface). When the goal is a single "go to"/"pick up" and a
matching high-level action is offered, it takes that one action (path finding
does the rest); otherwise it follows minigrid's BabyAI bot one primitive at a
time, each primitive spelled as the offered action that performs it. One-step
"open" and "put next to" goals are likewise done with the offered high-level
actions when their objects are in sight. minigrid's bot can plan forever on a few
seeds (its subgoal stack grows without end, e.g. UnlockToUnlock seed 4): each of
its replans gets a wall-clock budget, and running out counts as the bot giving up.
"""

from __future__ import annotations

import re
import signal
import threading
from contextlib import contextmanager

from minigrid.utils.baby_ai_bot import BabyAIBot

from turnrl.envs.babyai.env import BabyAIEnv
from turnrl.envs.babyai.view import PICKABLE_TYPES, observe

COLORS = "red|green|blue|purple|yellow|grey"
OBJ = rf"(?:the|a) (?:({COLORS}) )?(\w+)"
SIMPLE_GOAL = re.compile(rf"(go to|pick up|open) {OBJ}")
PUT_GOAL = re.compile(rf"put {OBJ} next to {OBJ}")
LABEL = re.compile(rf"({COLORS}) (?:(?:open|closed|locked) )?(\w+) \d+")
REPLAN_BUDGET_S = 2.0


class PlanningTimeout(Exception):
    """The bot's replan ran past its budget."""


@contextmanager
def _budget(seconds: float):
    """Raise ``PlanningTimeout`` in the block after ``seconds`` (main thread only; elsewhere no limit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(*_):
        raise PlanningTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _offered(actions: list[str], prefix: str, color: str | None, kind: str, suffix: str = "") -> str | None:
    """The first offered ``prefix + <label> + suffix`` action whose label fits (color, kind)."""
    for action in actions:
        if not (action.startswith(prefix) and action.endswith(suffix)):
            continue
        label = LABEL.fullmatch(action[len(prefix) : len(action) - len(suffix)])
        if label is None:
            continue
        a_color, a_kind = label.groups()
        kind_ok = a_kind == kind or (kind == "object" and a_kind in PICKABLE_TYPES)
        if kind_ok and (color is None or a_color == color):
            return action
    return None


def matching_goal_action(mission: str, actions: list[str], carrying: tuple[str, str] | None = None) -> str | None:
    """The offered action that makes progress on a one-step mission ("go to", "pick up", "open",
    "put X next to Y"), if its objects are in sight; None otherwise."""
    goal = SIMPLE_GOAL.fullmatch(mission)
    if goal is not None:
        verb, color, kind = goal.groups()
        if verb == "open":
            return _offered(actions, "toggle and go through ", color, kind)
        return _offered(actions, verb + " ", color, kind)
    put = PUT_GOAL.fullmatch(mission)
    if put is None:
        return None
    color, kind, target_color, target_kind = put.groups()
    holds_it = carrying is not None and carrying[1] == kind and color in (None, carrying[0])
    if not holds_it:
        return None if carrying is not None else _offered(actions, "pick up ", color, kind)
    for action in actions:
        if action.startswith("put ") and " next to " in action:
            label = action.split(" next to ", 1)[1]
            if _offered([label], "", target_color, target_kind):
                return action
    return None


class BabyAIOracle:
    """Plays one episode of a ``BabyAIEnv`` (create one per episode, after ``reset``)."""

    def __init__(self, env: BabyAIEnv):
        self.env = env
        self.bot = BabyAIBot(env.world)
        self._last_primitive = None
        self._restart_bot = False

    def next_action(self) -> str | None:
        """The action text to play now (None when the bot has no idea)."""
        world = self.env.world
        carrying = (world.carrying.color, world.carrying.type) if world.carrying is not None else None
        direct = matching_goal_action(self.env.mission, self.env.valid_actions_sync(), carrying)
        if direct is not None:
            self._restart_bot = True
            return direct
        if self._restart_bot:  # the world moved under the bot's feet: let it plan afresh
            self.bot, self._last_primitive, self._restart_bot = BabyAIBot(world), None, False
        try:
            with _budget(REPLAN_BUDGET_S):
                primitive = self.bot.replan(self._last_primitive)
        except (AssertionError, PlanningTimeout):  # the bot gives up (it cannot solve a few levels, e.g. KeyInBox)
            return None
        self._last_primitive = primitive
        names = world.actions
        if primitive == names.left:
            return "turn left"
        if primitive == names.right:
            return "turn right"
        if primitive == names.forward:
            return "move forward"
        if primitive == names.drop:
            return "drop"
        if primitive == names.toggle:
            return "toggle"
        if primitive == names.pickup:
            front = tuple(int(v) for v in world.front_pos)
            for obj in observe(world).objects:
                if obj.pos == front:
                    return f"pick up {obj.label}"
        return None


def play(env: BabyAIEnv, item_id: int, max_turns: int = 1000) -> tuple[bool, float, int]:
    """Reset to ``item_id`` and play the oracle; returns (success, reward, turns)."""
    env.reset_sync(item_id)
    oracle = BabyAIOracle(env)
    for turn in range(1, max_turns + 1):
        action = oracle.next_action()
        if action is None:
            return False, 0.0, turn
        result = env.step_sync(f"Action: {action}")
        if not result.info["valid"]:
            return False, 0.0, turn
        if result.done:
            return bool(result.info["success"]), result.reward, turn
    return False, 0.0, max_turns
