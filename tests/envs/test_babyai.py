"""BabyAI as text: the description, the high-level actions, invalid actions, the path planner, parsing.

The rules every family keeps (determinism, splits, bad replies, close) are pinned in test_env_contract.py.
"""

from __future__ import annotations

import json
import re

import pytest

from turnrl.envs.babyai import BabyAIEnv
from turnrl.envs.babyai.macros import shortest_path
from turnrl.envs.babyai.view import observe
from turnrl.envs.base import parse_action

OBJECT_RE = re.compile(
    r"There is a (\w+) (key|ball|box) (\d+) (?:right in front of you (\d+) steps away"
    r"|(\d+) steps in front of you and (\d+) steps to your (left|right))\."
)


SEED_3_TEXT = (
    "In front of you in this room, you can see several objects: "
    "There is a red box 1 1 steps in front of you and 1 steps to your right. "
    "There is a green box 1 right in front of you 2 steps away. "
    "There is a grey ball 1 right in front of you 3 steps away. "
    "There is a red box 2 2 steps in front of you and 3 steps to your right. "
    "There is a red key 1 3 steps in front of you and 2 steps to your right. "
    "There is a red ball 1 4 steps in front of you and 3 steps to your right. "
    "You are facing a wall 6 steps away. You are not carrying anything.\n"
    "Available actions: turn left, turn right, move forward, go to red box 1, pick up red box 1, "
    "go to green box 1, pick up green box 1, go to grey ball 1, pick up grey ball 1, go to red box 2, "
    "pick up red box 2, go to red key 1, pick up red key 1, go to red ball 1, pick up red ball 1\n"
    "Your goal: go to the red key"
)


def test_fixed_seed_text_in_agentgym_layout():
    """AgentGym's layout: the goal first, the description, the actions as a JSON-style list; later turns
    drop the goal line and say " The task is completed." after the description on success."""
    env = BabyAIEnv("GoToLocal")
    description, actions, goal = SEED_3_TEXT.splitlines()
    listed = [a.strip() for a in actions.removeprefix("Available actions: ").split(",")]
    first = env.reset_sync(3)
    assert first == f"{goal}\n{description}\nAvailable actions: {json.dumps(listed)}"
    assert json.loads(first.splitlines()[2].removeprefix("Available actions: ")) == env.valid_actions_sync()
    turned = env.step_sync("Action: turn left").observation.splitlines()
    assert (
        len(turned) == 2 and turned[0].startswith("In front of you") and turned[1].startswith('Available actions: ["')
    )
    env.reset_sync(3)
    won = env.step_sync("Action: go to red key 1")
    assert won.done and won.info["success"] and "\n The task is completed.\nAvailable actions: [" in won.observation
    with pytest.raises(ValueError, match="layout"):
        BabyAIEnv("GoToLocal", layout="html")


def test_fixed_seed_text():
    env = BabyAIEnv("GoToLocal", layout="turnrl")
    assert env.reset_sync(3) == SEED_3_TEXT
    # the same layout after a turn, with the world changed
    result = env.step_sync("Action: turn left")
    lines = result.observation.splitlines()
    assert len(lines) == 3 and lines[2] == "Your goal: go to the red key"
    assert lines[1].startswith("Available actions: turn left, turn right")
    assert result.reward == 0.0 and not result.done and result.info["valid"]


def test_described_positions_match_the_grid():
    env = BabyAIEnv("GoToLocal")
    seen = 0
    for seed in range(25):
        text = env.reset_sync(seed)
        seen += _check_positions(env, text)
    assert seen >= 40  # most seeds see several objects


def _check_positions(env, text) -> int:
    inner = env._env
    ax, ay = (int(v) for v in inner.agent_pos)
    fx, fy = (int(v) for v in inner.dir_vec)
    rx, ry = (int(v) for v in inner.right_vec)
    found = OBJECT_RE.findall(text)
    if not found:
        assert "You cannot see any objects within sight." in text
    counters: dict[str, int] = {}
    for color, kind, index, ahead_only, ahead, side_steps, side in found:
        front = int(ahead_only or ahead)
        right = 0 if ahead_only else int(side_steps) * (1 if side == "right" else -1)
        cell = inner.grid.get(ax + front * fx + right * rx, ay + front * fy + right * ry)
        assert cell is not None and (cell.color, cell.type) == (color, kind)
        counters[f"{color} {kind}"] = counters.get(f"{color} {kind}", 0) + 1
        assert int(index) == counters[f"{color} {kind}"]
    return len(found)


def test_go_to_action_reaches_the_object_and_succeeds():
    env = BabyAIEnv("GoToLocal", layout="turnrl")
    env.reset_sync(3)
    result = env.step_sync("Action: go to red key 1")
    assert result.done and result.reward > 0 and result.info["success"]
    assert result.observation.endswith("The task is completed.")


def test_invalid_action_describes_the_same_world_and_moves_nothing():
    env = BabyAIEnv("GoToLocal")
    first = env.reset_sync(3)
    steps_before = env._env.step_count
    pos_before = tuple(env._env.agent_pos)
    for bad in ["Action: fly to the moon", "go to red key 1 without the marker", "Action: pick up unicorn 7"]:
        result = env.step_sync(bad)
        assert result.observation.startswith("Invalid action.")
        assert first in result.observation  # the same world is described again
    assert env._env.step_count == steps_before and tuple(env._env.agent_pos) == pos_before


def test_step_after_done_is_an_error():
    env = BabyAIEnv("GoToLocal")
    env.reset_sync(3)
    env.step_sync("Action: go to red key 1")
    with pytest.raises(RuntimeError):
        env.step_sync("Action: turn left")


def test_bad_level():
    with pytest.raises(ValueError, match="unknown BabyAI level"):
        BabyAIEnv("NoSuchLevel")


def test_every_offered_action_is_executable():
    env = BabyAIEnv("PickupLoc")
    for seed in range(15):
        env.reset_sync(seed)
        for action in env.valid_actions_sync():
            probe = BabyAIEnv("PickupLoc")
            probe.reset_sync(seed)
            result = probe.step_sync(f"Action: {action}")
            assert result.info["valid"], (seed, action)


def test_shortest_path_faces_target():
    env = BabyAIEnv("GoToLocal")
    for seed in range(20):
        env.reset_sync(seed)
        inner = env._env
        view = observe(inner)
        for obj in view.objects:
            path = shortest_path(
                inner.grid, tuple(int(v) for v in inner.agent_pos), int(inner.agent_dir), obj.pos, arrive=False
            )
            assert path is not None
            # replay on a copy of the state
            x, y, d = int(inner.agent_pos[0]), int(inner.agent_pos[1]), int(inner.agent_dir)
            vecs = ((1, 0), (0, 1), (-1, 0), (0, -1))
            for action in path:
                if action == 0:
                    d = (d - 1) % 4
                elif action == 1:
                    d = (d + 1) % 4
                else:
                    nx, ny = x + vecs[d][0], y + vecs[d][1]
                    cell = inner.grid.get(nx, ny)
                    assert cell is None or cell.can_overlap()
                    x, y = nx, ny
            assert (x + vecs[d][0], y + vecs[d][1]) == obj.pos


def test_sampling_rejected_is_silent(capsys):
    env = BabyAIEnv("GoToLocal")
    for seed in range(30):
        env.reset_sync(seed)
    assert "Sampling rejected" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Action: turn left", "turn left"),
        ("Thought: the key is ahead.\nAction: Go To Red Key 1.", "go to red key 1"),
        ("action:move forward\nmore text", "move forward"),
        ("no marker here", None),
        ("Action:   ", None),
    ],
)
def test_parse_action(text, expected):
    assert parse_action(text) == expected
