"""``bench/chaos.py --quick`` end to end: fuzzed wires, faults under a rollout, training killed and resumed, a soak;
every section present and every figure at its goal (no crash, no unanswered frame, no lost episode, every resumed
run exact, RSS and descriptors flat)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_chaos_quick_meets_every_goal(tmp_path):
    out = tmp_path / "chaos.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "chaos.py"), "--quick", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a hang guard; the run takes about 2 minutes
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) >= {"fuzz", "faults", "train", "soak", "goals", "goals_met"}

    wires = {r["wire"] for r in results["fuzz"]["rows"]}
    assert wires == {"generation service", "env worker", "AgentGym HTTP env server", "search retriever"}
    for row in results["fuzz"]["rows"]:
        assert row["frames"] == results["fuzz"]["frames_per_wire"] > 0
        assert row["crashes"] == 0 and row["unanswered"] == 0 and row["alive_after"], row
        assert row["error_replies"] + row["other_replies"] == row["frames"]
        assert row["error_replies"] > row["frames"] // 2  # bad frames are mostly refused, not served

    faults = results["faults"]["rows"]
    assert {r["scenario"] for r in faults} >= {"env worker SIGKILL", "generation service SIGKILL"}
    for row in faults:
        assert row["faults_fired"] >= 1 and row["failure"] is None, row
        assert row["lost"] == 0 and row["episodes_finished"] == row["episodes_started"] > 0, row
        assert sum(row["end_reasons"].values()) == row["episodes_finished"]
    by_name = {r["scenario"]: r for r in faults}
    assert by_name["env worker SIGKILL"]["env_worker_restarts"] >= 1
    assert len(by_name["generation service SIGKILL"]["service_restarts"]) >= 1

    train = results["train"]
    assert train["kills"] >= 2 and train["killed"] == train["kills"]
    assert train["resumed_exact"] == train["kills"]
    assert all(r["steps_exactly_once"] and r["weights_equal"] for r in train["rows"])

    soak = results["soak"]["rows"]
    assert {(r["family"], r["transport"]) for r in soak} >= {("babyai", "HTTP server"), ("babyai", "env worker")}
    assert all(r["flat"] and r["cycles"] > 0 for r in soak)
    assert results["goals_met"] is True and all(results["goals"].values())
