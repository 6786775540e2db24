"""BabyAI as text: minigrid levels, described in words, driven by high-level actions.

Invariant: item id -> (level, seed) is a pure function, so the same id gives the
same first observation in any process: with one named level the item id is the
seed; with ``level="all"`` (or None) it is AgentGym's mapping over its 40 levels
(``levels.agentgym_task``). One policy turn is one high-level action
(several primitive steps); an invalid or unparseable action changes nothing in
the world, gets an observation saying so, and costs the turn. Reward is
minigrid's (``1 - 0.9 * steps / max_steps`` on success, else 0); ``info`` carries
``success``, ``score`` and the primitive step count.

Layout (``layout=``): ``agentgym`` (default) is AgentGym's: the first observation
is "Your goal: <mission>", the description, then "Available actions: [...]" as a
JSON-style list; later observations are the description and the list (the goal
is not repeated), with " The task is completed." after the description on
success. ``turnrl`` is our earlier one: description, "Available actions: a, b",
"Your goal: <mission>" on every turn. AgentGym also rewrites "then"/"after you"
in missions to "and"; we keep the mission verbatim (the order matters in the
sequence levels).
"""

from __future__ import annotations

import contextlib
import io

import gymnasium as gym

from turnrl.envs.babyai.levels import ALL_LEVELS, agentgym_task, gym_id
from turnrl.envs.babyai.macros import available_actions
from turnrl.envs.babyai.view import observe, render_view
from turnrl.envs.base import BlockingEnv, parse_action
from turnrl.protocol import EnvResult

LAYOUTS = ("agentgym", "turnrl")
SYSTEM_PROMPT = (
    "You are an agent in a grid world. Each turn you read your goal, what you see and the "
    "available actions, then reply with exactly one of them as: Action: <action>"
)


class BabyAIEnv(BlockingEnv):
    family = "babyai"
    system_prompt = SYSTEM_PROMPT

    def __init__(self, level: str | None = "GoToLocal", layout: str = "agentgym") -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose from: {', '.join(LAYOUTS)}")
        self.layout = layout
        self.all_levels = level is None or level == ALL_LEVELS
        self.level = ALL_LEVELS if self.all_levels else level
        self._gyms: dict[str, gym.Env] = {}
        self._env = None if self.all_levels else self._load(level)
        self._actions: dict[str, list[int]] = {}
        self._observation = ""
        self._done = True
        self._seed = -1
        self.current_level = self.level

    # ---- episode -----------------------------------------------------------------
    def _load(self, level: str):
        """The unwrapped minigrid env of ``level`` (made once, then reused)."""
        if level not in self._gyms:
            try:
                self._gyms[level] = gym.make(gym_id(level))
            except gym.error.Error as exc:
                raise ValueError(f"unknown BabyAI level {level!r}: {exc}") from None
        return self._gyms[level].unwrapped

    def reset_sync(self, item_id: int) -> str:
        if item_id < 0:
            raise ValueError(f"item_id must be >= 0, got {item_id}")
        if self.all_levels:
            self.current_level, self._seed = agentgym_task(int(item_id))
            self._env = self._load(self.current_level)
        else:
            self.current_level, self._seed = self.level, int(item_id)
        with contextlib.redirect_stdout(io.StringIO()):  # silence "Sampling rejected" prints
            self._env.reset(seed=self._seed)
        self._done = False
        self._observation = self._render(first=True)
        return self._observation

    def step_sync(self, action_text: str) -> EnvResult:
        if self._done:
            raise RuntimeError("step() after the episode ended; call reset() first")
        action = parse_action(action_text)
        if action is None:
            return self._invalid('Reply with "Action: <one of the available actions>".')
        if action not in self._actions:
            return self._invalid(f'"{action}" is not one of the available actions.')
        reward, terminated, truncated = 0.0, False, False
        for primitive in self._actions[action]:
            _, r, terminated, truncated, _ = self._env.step(primitive)
            reward += float(r)
            if terminated or truncated:
                break
        self._done = terminated or truncated
        success = terminated and reward > 0
        self._observation = self._render(first=False, completed=success)
        text = self._observation
        if success and self.layout == "turnrl":
            text += "\nThe task is completed."
        return EnvResult(observation=text, reward=reward, done=self._done, info=self._info(success, reward, True))

    @property
    def world(self):
        """The unwrapped minigrid env of the current episode (for oracles and tests)."""
        return self._env

    @property
    def mission(self) -> str:
        return self._env.mission

    def valid_actions_sync(self) -> list[str]:
        return list(self._actions)

    # ---- helpers -----------------------------------------------------------------
    def _render(self, first: bool, completed: bool = False) -> str:
        view = observe(self._env)
        self._actions = available_actions(self._env, view)
        if self.layout == "turnrl":
            return f"{render_view(view)}\nAvailable actions: {', '.join(self._actions)}\nYour goal: {self._env.mission}"
        listed = "[" + ", ".join(f'"{a}"' for a in self._actions) + "]"
        description = render_view(view) + ("\n The task is completed." if completed else "")
        goal = f"Your goal: {self._env.mission}\n" if first else ""
        return f"{goal}{description}\nAvailable actions: {listed}"

    def _invalid(self, why: str) -> EnvResult:
        text = f"Invalid action. {why}\n{self._observation}"
        return EnvResult(observation=text, reward=0.0, done=False, info=self._info(False, 0.0, False))

    def _info(self, success: bool, reward: float, valid: bool) -> dict:
        return {
            "success": bool(success),
            "score": float(reward),
            "valid": valid,
            "level": self.current_level,
            "seed": self._seed,
            "primitive_steps": int(self._env.step_count),
        }

    def close_sync(self) -> None:
        for made in self._gyms.values():
            made.close()
        self._gyms.clear()
