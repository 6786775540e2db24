"""BabyAI over AgentGym's 40 levels: the item-id mapping, every level resets, the oracle solves them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from turnrl.envs.babyai import BabyAIEnv
from turnrl.envs.babyai.levels import AGENTGYM_LEVELS, agentgym_task, gym_id
from turnrl.envs.babyai.oracle import play


def test_agentgym_mapping():
    assert len(AGENTGYM_LEVELS) == len(set(AGENTGYM_LEVELS)) == 40
    assert agentgym_task(0) == ("GoToRedBallGrey", 0)
    assert agentgym_task(39) == ("BossLevelNoUnlock", 0)
    assert agentgym_task(40) == ("GoToRedBallGrey", 1)
    assert agentgym_task(40 * 7 + 23) == ("Unlock", 7)
    with pytest.raises(ValueError, match="item_id"):
        agentgym_task(-1)
    with pytest.raises(ValueError, match="level"):
        gym_id("NoSuchLevel")


def test_every_level_resets_with_actions_and_goal(capfd):
    env = BabyAIEnv(level="all")
    for item in [*range(40), *range(40 * 50, 40 * 51)]:
        text = env.reset_sync(item)
        level, seed = agentgym_task(item)
        result_level = env.current_level
        assert result_level == level and seed == item // 40
        actions = env.valid_actions_sync()
        assert {"turn left", "turn right"} <= set(actions)
        assert text.splitlines()[0] == f"Your goal: {env.mission}"
        for action in actions:
            assert action in text
    env.close_sync()
    assert capfd.readouterr().out == ""  # minigrid's "Sampling rejected" prints are silenced


def test_oracle_solves_goto_and_pickup_levels():
    env = BabyAIEnv(level="all")
    solved = 0
    goto_pickup = [i for i, name in enumerate(AGENTGYM_LEVELS) if name.startswith(("GoTo", "Pickup"))]
    assert len(goto_pickup) >= 15
    for index in goto_pickup:
        for seed in (0, 1):
            success, reward, _ = play(env, index + 40 * seed, max_turns=300)
            assert success and reward > 0, (AGENTGYM_LEVELS[index], seed)
            solved += 1
    assert solved == 2 * len(goto_pickup)


@pytest.mark.parametrize("level", ["PutNextLocalS6N4", "Unlock", "UnlockPickupDist", "BossLevel"])
def test_oracle_solves_put_next_and_unlock_levels(level):
    env = BabyAIEnv(level="all")
    index = AGENTGYM_LEVELS.index(level)
    wins = sum(play(env, index + 40 * seed, max_turns=400)[0] for seed in range(3))
    assert wins == 3


def test_invalid_action_changes_nothing():
    env = BabyAIEnv(level="all")
    first = env.reset_sync(21)
    result = env.step_sync("Action: fly to the moon")
    assert not result.info["valid"] and result.reward == 0.0 and not result.done
    assert result.observation.endswith(first)


def test_same_item_same_first_observation_across_processes():
    items = [0, 7, 23, 38, 41, 1234]
    code = (
        "import json, sys\nfrom turnrl.envs.babyai import BabyAIEnv\nenv = BabyAIEnv(level='all')\n"
        f"print(json.dumps([env.reset_sync(i) for i in {items!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    remote = json.loads(out)
    env = BabyAIEnv(level=None)
    local = [env.reset_sync(i) for i in reversed(items)][::-1]  # order of resets must not matter
    assert remote == local
    assert len(set(local)) == len(local)
