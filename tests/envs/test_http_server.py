"""The env server over real HTTP: AgentGym's round trip, JSON errors, the cap, idle reaping, no leak."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import psutil
import pytest

from turnrl.envs.babyai import BabyAIEnv
from turnrl.envs.babyai.oracle import BabyAIOracle
from turnrl.envs.http.launch import running_server
from turnrl.envs.textcraft import TextCraftEnv


@pytest.fixture(scope="module")
def babyai_server():
    with running_server("babyai", "--max-envs", "3") as (base, process):
        yield base, process


def _post(base: str, route: str, body=None) -> httpx.Response:
    return httpx.post(f"{base}/{route}", json=body, timeout=30)


def test_agentgym_round_trip_matches_the_local_env(babyai_server):
    """Drive the server the way AgentGym's BabyAI client does (bare actions) and compare with a local env."""
    base, _ = babyai_server
    env_id = _post(base, "create").json()["id"]
    local = BabyAIEnv(level="all")
    item = 16 + 40 * 2  # Pickup, seed 2
    answer = _post(base, "reset", {"id": env_id, "data_idx": item}).json()
    assert answer["observation"] == local.reset_sync(item)
    assert answer["reward"] == 0 and answer["done"] is False
    assert httpx.get(f"{base}/observation", params={"id": env_id}).json() == answer["observation"]
    oracle = BabyAIOracle(local)
    for _ in range(200):
        action = oracle.next_action()
        mine = local.step_sync(f"Action: {action}")
        theirs = _post(base, "step", {"id": env_id, "action": action}).json()
        assert theirs["observation"] == mine.observation and theirs["reward"] == mine.reward
        assert theirs["done"] == mine.done and theirs["score"] == mine.info["score"]
        if mine.done:
            break
    assert theirs["done"] and theirs["reward"] > 0 and theirs["success"]
    after = _post(base, "step", {"id": env_id, "action": "turn left"})
    assert after.status_code == 409 and "reset" in after.json()["error"]
    assert _post(base, "close", {"id": env_id}).json() == {"closed": env_id}


def test_errors_are_json_with_4xx(babyai_server):
    base, _ = babyai_server
    unknown = _post(base, "step", {"id": 987654, "action": "turn left"})
    assert unknown.status_code == 404 and "987654" in unknown.json()["error"]
    assert httpx.get(f"{base}/observation", params={"id": 987654}).status_code == 404
    for body in ({"id": "x", "action": "go"}, {"action": "turn left"}, {"id": 0}, [1, 2]):
        bad = _post(base, "step", body)
        assert bad.status_code == 422 and bad.json()["error"] == "malformed request", body
    raw = httpx.post(f"{base}/reset", content=b"{not json", headers={"content-type": "application/json"})
    assert raw.status_code == 422 and "error" in raw.json()
    env_id = _post(base, "create").json()["id"]
    negative = _post(base, "reset", {"id": env_id, "data_idx": -5})
    assert negative.status_code == 400 and "data_idx" in negative.json()["error"]
    early = _post(base, "step", {"id": env_id, "action": "turn left"})
    assert early.status_code == 409
    good = {"reset": {"id": env_id, "data_idx": 3}, "step": {"id": env_id, "action": "turn left"}}
    for route, fields in [("reset", good["reset"]), ("step", good["step"]), ("close", {"id": env_id})]:
        for body, kind, field in [
            ({**fields, "surprise": 1}, "extra_forbidden", "surprise"),  # an unknown field
            ({k: v for k, v in fields.items() if k != "id"}, "missing", "id"),  # a missing one
        ]:
            bad = _post(base, route, body)
            assert bad.status_code == 422 and bad.json()["error"] == "malformed request", (route, body)
            assert [(d["type"], d["loc"]) for d in bad.json()["detail"]] == [(kind, ["body", field])], (route, body)
    # nothing was changed by the refused calls: the env still serves, as it would have
    assert _post(base, "reset", good["reset"]).json()["observation"] == BabyAIEnv(level="all").reset_sync(3)
    assert _post(base, "step", good["step"]).status_code == 200
    _post(base, "close", {"id": env_id})
    assert _post(base, "close", {"id": env_id}).status_code == 404


def test_create_past_the_cap_is_refused(babyai_server):
    base, _ = babyai_server
    live = httpx.get(f"{base}/health").json()["live_envs"]
    ids = [_post(base, "create").json()["id"] for _ in range(3 - live)]
    refused = _post(base, "create")
    assert refused.status_code == 429 and "cap" in refused.json()["error"]
    _post(base, "close", {"id": ids[0]})
    again = _post(base, "create")
    assert again.status_code == 200 and again.json()["id"] not in ids  # ids are never reused
    for env_id in [*ids[1:], again.json()["id"]]:
        _post(base, "close", {"id": env_id})
    assert httpx.get(f"{base}/health").json()["live_envs"] == 0


def test_binds_loopback_by_default(babyai_server):
    _, process = babyai_server
    listening = [c for c in psutil.Process(process.pid).net_connections() if c.status == psutil.CONN_LISTEN]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)


def test_idle_envs_are_reaped():
    with running_server("textcraft", "--idle-timeout", "0.5") as (base, _):
        kept = _post(base, "create").json()["id"]
        idle = _post(base, "create").json()["id"]
        _post(base, "reset", {"id": idle, "data_idx": 1})
        deadline = time.monotonic() + 60  # a hang guard: both envs are reaped half a second after their last call
        while httpx.get(f"{base}/health").json()["reaped"] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        health = httpx.get(f"{base}/health").json()
        assert health["reaped"] == 2 and health["live_envs"] == 0
        for env_id in (kept, idle):
            assert _post(base, "step", {"id": env_id, "action": "inventory"}).status_code == 404


def test_textcraft_over_http_and_bad_item(tmp_path):
    with running_server("textcraft") as (base, _):
        env_id = _post(base, "create").json()["id"]
        answer = _post(base, "reset", {"id": env_id, "data_idx": 12}).json()
        assert answer["observation"] == TextCraftEnv().reset_sync(12)
        step = _post(base, "step", {"id": env_id, "action": "Thought: look.\nAction: inventory"}).json()
        assert step["observation"].startswith("Inventory:") and step["valid"]
        too_big = _post(base, "reset", {"id": env_id, "data_idx": 10**6})
        assert too_big.status_code == 400 and "item_id" in too_big.json()["error"]


def test_create_close_cycles_leave_memory_flat(babyai_server):
    base, process = babyai_server
    server = psutil.Process(process.pid)
    with httpx.Client(base_url=base, timeout=30) as client:

        def cycles(count: int, start: int) -> None:
            for i in range(start, start + count):
                env_id = client.post("/create").json()["id"]
                client.post("/reset", json={"id": env_id, "data_idx": i % 400})
                client.post("/step", json={"id": env_id, "action": "turn left"})
                assert client.post("/close", json={"id": env_id}).status_code == 200

        cycles(120, 0)  # warm up: every level made (3 seeds each), caches filled
        before = server.memory_info().rss
        cycles(1000, 120)
        after = server.memory_info().rss
    assert client.is_closed
    assert httpx.get(f"{base}/health").json()["live_envs"] == 0
    assert after - before < 8 * 2**20, (before, after)  # a leak of one env per cycle would be far larger


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["chess"], "unknown env 'chess'"),
        (["babyai", "--max-envs", "0"], "max_envs must be >= 1"),
        (["babyai", "--idle-timeout", "-1"], "idle_timeout_s must be > 0"),
        (["babyai", "--port", "70000"], "--port must be in"),
        (["babyai", "--port", "many"], "--port"),
    ],
)
def test_serve_env_bad_values(args, needle):
    result = subprocess.run(
        [sys.executable, "-m", "turnrl.cli", "serve-env", *args], capture_output=True, text=True, timeout=60
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("turnrl: error:"), result.stderr
    assert needle in lines[0]
