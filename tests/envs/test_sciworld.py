"""SciWorld: AgentGym's task list against the simulator, the gold path, bad settings, the bounded JVM, HTTP.

The rules every family keeps are pinned in test_env_contract.py; here, besides, one item's gold path, listed
actions and outcome must not depend on what the simulator loaded before (item 2936 once needed "focus on
butterfly" on its first load and another animal on its second).
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import psutil
import pytest

from turnrl.envs import get_env_spec
from turnrl.envs.http.client import HttpEnv
from turnrl.envs.http.launch import running_server
from turnrl.envs.sciworld import NUM_ITEMS, SciWorldEnv, sciworld_task
from turnrl.envs.sciworld.tasks import EXCLUDED, TASKS


@pytest.fixture(scope="module")
def env():
    made = SciWorldEnv(heap_mb=300, gold_path=True)
    yield made
    made.close_sync()


def test_task_table_matches_the_simulator(env):
    env.reset_sync(0)
    api = env.simulator.api
    assert set(api.getTaskNames()) == {name for _, name, _ in TASKS}
    for _, name, variations in TASKS:
        assert api.getTaskMaxVariations(name) == variations, name
    assert NUM_ITEMS == sum(v for key, _, v in TASKS if key not in EXCLUDED) == 4639
    assert sciworld_task(0) == ("boil", 0)
    assert sciworld_task(30) == ("melt", 0)
    assert sciworld_task(NUM_ITEMS - 1) == ("identify-life-stages-2", 9)
    for bad in (-1, NUM_ITEMS):
        with pytest.raises(ValueError, match="item_id"):
            sciworld_task(bad)
    splits = get_env_spec("sciworld").splits
    assert len(splits.test) == 202
    assert len(splits.test) + len(splits.train) == NUM_ITEMS


def test_gold_path_scores_100(env):
    first = env.reset_sync(31)  # melt, variation 1
    assert first.startswith(env.task_description + "\n") and "This room is called" in first
    rewards = []
    for action in env.gold_actions():
        result = env.step_sync(f"Action: {action}")
        assert 0.0 <= result.reward <= 1.0 and result.reward == max(result.info["score"], 0) / 100
        rewards.append(result.reward)
        if result.done:
            break
    assert result.done and result.info["score"] == 100 and result.reward == 1.0 and result.info["success"]
    assert 0.0 < min(r for r in rewards if r > 0) < 1.0  # partial credit on the way


def test_listing_and_bad_settings(env):
    env.reset_sync(100)
    actions = env.valid_actions_sync()
    assert "look around" in actions and len(actions) > 20
    with pytest.raises(ValueError, match="heap_mb"):
        SciWorldEnv(heap_mb=16)
    with pytest.raises(ValueError, match="step_limit"):
        SciWorldEnv(step_limit=0)
    with pytest.raises(ValueError, match="gold_actions"):
        SciWorldEnv().gold_actions()


def test_jvm_heap_is_bounded(env):
    env.reset_sync(3)
    assert "-Xmx300m" in psutil.Process(env.simulator.pid).cmdline()


async def test_over_http_with_agentgym_fields_and_close_reaps_the_jvm(env):
    with running_server("sciworld") as (base, server):
        remote = HttpEnv(base, protocol="agentgym-sciworld", family="sciworld")
        assert await remote.reset(45) == env.reset_sync(45)  # task description + look, as AgentGym's client
        raw = httpx.post(f"{base}/reset", json={"id": remote.env_id, "data_idx": 45}).json()
        assert raw["task_name"] == "melt" and raw["var_num"] == 15
        assert raw["task_description"] == env.task_description and raw["observation"].startswith("This room")
        env.reset_sync(45)
        result, mine = await remote.step("Action: look around"), env.step_sync("Action: look around")
        assert result.observation == mine.observation and result.info["score"] == mine.info["score"]
        jvms = [p for p in psutil.Process(server.pid).children(recursive=True) if "java" in p.name()]
        assert len(jvms) == 1
        await remote.close()
        await remote.close()
        psutil.wait_procs(jvms, timeout=10)
        assert not jvms[0].is_running() or jvms[0].status() == psutil.STATUS_ZOMBIE


def test_same_item_same_first_observation_across_processes(env):
    items = [7, 1234, 4000]
    code = (
        "import json\nfrom turnrl.envs.sciworld import SciWorldEnv\nenv = SciWorldEnv()\n"
        f"print(json.dumps([env.reset_sync(i) for i in {items!r}]))\nenv.close_sync()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    local = [env.reset_sync(i) for i in reversed(items)][::-1]
    assert json.loads(out) == local and len(set(local)) == len(local)


def _play_gold(env: SciWorldEnv, item: int) -> tuple:
    first = env.reset_sync(item)
    actions = env.valid_actions_sync()
    gold = env.gold_actions()
    for action in gold:
        result = env.step_sync(f"Action: {action}")
        if result.done:
            break
    return first, actions, gold, result.info["score"], result.done


def test_item_outcome_does_not_depend_on_what_was_loaded_before(env):
    items = [2936, 1, 4000]
    fresh = SciWorldEnv(heap_mb=256, gold_path=True)
    try:
        first_order = {i: _play_gold(fresh, i) for i in items}
    finally:
        fresh.close_sync()
    for warm_up in (3500, 2937, 2936):  # other items first, and the same item twice
        env.reset_sync(warm_up)
    second_order = {i: _play_gold(env, i) for i in reversed(items)}
    assert second_order == first_order
    assert first_order[2936][3] == 100 and first_order[2936][4]  # the gold path still solves it
    assert len({outcome[2][-1] for outcome in first_order.values()}) == len(items)
