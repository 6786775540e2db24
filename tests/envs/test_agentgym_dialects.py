"""``serve-env`` in each family's AgentGym dialect, driven by clients written from AgentGym's published protocol
(``agentgym_clients.py``: its field names, call order and client-side parsing), episodes played to reward > 0
by the family's scripted player on a local twin; and the dialect's 4xx errors.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import httpx
import pytest

from tests.envs.agentgym_clients import IdClient, SearchQAClient, WebArenaClient
from turnrl.envs.babyai import BabyAIEnv
from turnrl.envs.babyai.oracle import BabyAIOracle
from turnrl.envs.http.client import HttpEnv
from turnrl.envs.http.dialects import DIALECTS, FAMILY_DIALECTS, dialect_for, get_dialect
from turnrl.envs.http.launch import free_port, running_server
from turnrl.envs.search import SearchEnv
from turnrl.envs.textcraft import NUM_ITEMS, TextCraftEnv
from turnrl.envs.textcraft.oracle import plan


def test_each_family_has_its_dialect():
    assert {f: dialect_for(f).name for f in ("babyai", "textcraft", "sciworld", "search", "web")} == FAMILY_DIALECTS
    assert dialect_for("some-remote-family").name == "agentgym"
    assert get_dialect("webarena").done_field == "terminated" and get_dialect("searchqa").create_key is None
    assert set(FAMILY_DIALECTS.values()) < set(DIALECTS)
    with pytest.raises(ValueError, match="unknown dialect"):
        get_dialect("klingon")


def test_babyai_client_plays_to_reward():
    with running_server("babyai", "--max-envs", "4", "--no-measure-memory") as (base, _):
        client = IdClient(base)
        local = BabyAIEnv(level="all")
        item = 16 + 40 * 3  # Pickup, seed 3
        first = client.reset(item)
        assert first["observation"] == local.reset_sync(item) and first["observation"].startswith("Your goal: ")
        listed = json.loads(first["observation"].splitlines()[-1].removeprefix("Available actions: "))
        assert listed == local.valid_actions_sync()
        observed = client.observe()  # BabyAI's GET /observation answers the state as an object
        assert observed["observation"] == first["observation"] and observed["done"] is False
        oracle = BabyAIOracle(local)
        for _ in range(200):
            action = oracle.next_action()
            mine = local.step_sync(f"Action: {action}")
            theirs = client.step(f"Thought: on my way.\nAction: {action}")
            assert theirs.state == mine.observation
            if mine.done:
                break
        assert theirs.done and theirs.reward > 0
        assert client.observe()["score"] == theirs.reward
        client.close()
        health = httpx.get(f"{base}/health").json()
        assert health["dialect"] == "babyai" and health["live_envs"] == 0


def test_textcraft_client_creates_with_its_own_id_and_custom_tasks():
    local = TextCraftEnv()
    with running_server("textcraft", "--no-measure-memory") as (base, _):
        client = IdClient(
            base,
            create_body={"minecraft_dir": "agentenv_textcraft/", "commands": None, "goal": None},
            reward_key="reward",
        )
        assert client.created["observation"] == local.reset_sync(client.env_id)  # a new env starts on its own id
        item = 540
        assert client.reset(item + 2 * NUM_ITEMS)["observation"] == local.reset_sync(item)  # ids modulo 544
        assert client.observe() == client.reset(item)["observation"]  # TextCraft's GET /observation: the text
        for command in plan(local):
            step = client.step(f"Action: {command}")
        assert step.done and step.reward == 1 and re.fullmatch(rf"Crafted \d+ {local.goal}", step.state)
        client.close()

        commands = "craft 1 yellow wool using 1 yellow dye, 1 white wool"
        custom = IdClient(base, {"commands": commands, "goal": "minecraft:yellow_wool"}, reward_key="reward")
        assert custom.created["observation"] == f"Crafting commands:\n{commands}\n\nGoal: craft yellow wool."
        local.reset_custom(commands, "minecraft:yellow_wool")
        for command in plan(local):
            step = custom.step(f"Action: {command}")
        assert step.done and step.reward == 1 and step.state == "Crafted 1 minecraft:yellow_wool"

        live = httpx.get(f"{base}/health").json()["live_envs"]
        for body, needle in (
            ({"commands": commands}, "both"),
            ({"commands": commands, "goal": "oak log"}, "craftable"),
        ):
            refused = httpx.post(f"{base}/create", json=body)
            assert refused.status_code in (400, 422) and needle in json.dumps(refused.json())
        assert httpx.get(f"{base}/health").json()["live_envs"] == live  # a refused create leaves no env


def test_searchqa_client_gets_a_bare_id_and_answers_right():
    with running_server("search", "--no-measure-memory") as (base, _):
        client = SearchQAClient(base)
        assert isinstance(client.env_id, int)
        local = SearchEnv()
        question = client.reset(7)
        assert isinstance(question, str) and question == local.reset_sync(7) == client.observe()
        searched = client.step(f"<think>look it up</think><search>{local.question.text}</search>")
        assert searched.state.startswith("<information>") and searched.reward == 0 and not searched.done
        wrong = client.step("<answer>certainly not this</answer>")
        assert wrong.reward == 0 and not wrong.done and "Try again" in wrong.state
        right = client.step(f"<answer>{local.question.answers[0]}</answer>")
        assert right.reward == 1 and right.done
        client.close()
        # the env_idx dialect refuses the id dialect's fields, clearly
        for route, body in (("reset", {"id": 0, "data_idx": 1}), ("step", {"id": 0, "action": "x"})):
            bad = httpx.post(f"{base}/{route}", json=body)
            detail = bad.json()["detail"]
            assert bad.status_code == 422 and "unknown field `" in detail and bad.json()["dialect"] == "searchqa"
        assert httpx.get(f"{base}/observation", params={"id": 0}).status_code == 422
        unknown = httpx.post(f"{base}/step", json={"env_idx": 424242, "action": "<answer>a</answer>"})
        assert unknown.status_code == 404 and "424242" in unknown.json()["error"]
        # turnrl's own remote env speaks the same dialect as a client
        assert asyncio.run(_remote_search_episode(base, local)) == (local.reset_sync(9), True, 1.0)


async def _remote_search_episode(base: str, local: SearchEnv) -> tuple[str, bool, float]:
    remote = HttpEnv(base, protocol="searchqa", family="search")
    try:
        first = await remote.reset(9)
        local.reset_sync(9)
        answered = await remote.step(f"<answer>{local.question.answers[0]}</answer>")
        return first, answered.done, answered.reward
    finally:
        await remote.close()


def test_webarena_client_reads_terminated():
    from turnrl.envs.web.oracle import resolve
    from turnrl.envs.web.tasks import builtin_tasks

    script = builtin_tasks()[0]["oracle"]
    assert all(step[0] != "goto" for step in script)  # the script needs no site URL of the server's
    with running_server("web", "--no-measure-memory") as (base, _):
        client = WebArenaClient(base)
        first = client.reset(0)
        assert set(first) >= {"observation", "sites", "object"} and "OBJECTIVE" in first["observation"]
        assert first["sites"] == builtin_tasks()[0]["sites"] and first["object"] == builtin_tasks()[0]["intent"]
        assert client.observe() == first["observation"]
        assert client.step("click [1]").state.startswith("Cannot parse")  # no backticks: never sent
        tree = first["observation"]
        for step in script:
            action = resolve(step, tree, {})
            assert action is not None, step
            result = client.step(
                f"Let's think step-by-step. In summary, the next action I will perform is ```{action}```"
            )
            tree = result.state
        assert result.done and result.reward == 1
        raw = httpx.post(f"{base}/step", json={"env_idx": client.env_id, "action": "```stop [x]```"})
        assert raw.status_code == 409  # after the end: reset first
        again = client._post("reset", {"seed": 0, "idx": 1})
        answer = httpx.post(f"{base}/step", json={"env_idx": client.env_id, "action": "```scroll [down]```"}).json()
        assert again["observation"] and answer["terminated"] is False and answer["truncated"] is False
        assert "done" not in answer
        client.close()
        assert httpx.post(f"{base}/reset", json={"env_idx": client.env_id, "seed": 0, "idx": 0}).status_code == 404


def test_sciworld_client_follows_the_gold_path():
    from turnrl.envs.sciworld import SciWorldEnv

    local = SciWorldEnv(heap_mb=256, gold_path=True)
    try:
        with running_server("sciworld", "--no-measure-memory") as (base, _):
            client = IdClient(base)
            first = client.reset(31)
            text = local.reset_sync(31)
            assert f"{first['task_description']}\n{first['observation']}" == text
            assert client.observe() == text
            for action in local.gold_actions():
                step = client.step(f"Action: {action}")
                if step.done:
                    break
            assert step.done and step.reward == 100
            client.close()
    finally:
        local.close_sync()


def test_serve_env_defaults_fit_agentgym_rl_and_print_memory_per_env():
    command = [sys.executable, "-m", "turnrl.cli", "serve-env", "textcraft", "--port", str(free_port())]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        banner, memory = process.stderr.readline(), process.stderr.readline()  # printed before serving
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stderr.close()
    assert "textcraft dialect" in banner and "max 256 envs" in banner and "idle timeout 3600 s" in banner
    found = re.fullmatch(r"turnrl: memory: ([0-9.]+) MB per live env .* with 256 live envs\n", memory)
    assert found and float(found.group(1)) >= 0, memory
