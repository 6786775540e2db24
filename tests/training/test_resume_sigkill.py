"""A training process killed with SIGKILL between checkpoints resumes: same steps, stages and tasks, none twice;
synchronous (eta = 0) or killed while the next step's rollout overlaps the update (eta = 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from turnrl.config.curriculum import CurriculumConfig
from turnrl.engine.records.checkpoint import latest_checkpoint, load_trainer_state
from turnrl.engine.records.metrics import read_metrics
from turnrl.engine.rollout.curriculum import TurnCapSchedule
from turnrl.engine.rollout.sampler import TaskSampler
from turnrl.envs import get_env_spec
from turnrl.models.loading import save_policy

STEPS = 6


def _train(run, base_model, *extra: str, eta: int = 0) -> subprocess.Popen:
    settings = [
        f"rollout.staleness={eta}",
        f"model.path='{base_model}'",
        "checkpoint_every=2",
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "rollout.episode.turn_cap=3",
        "rollout.episode.max_new_tokens=6",
        "eval.tasks=2",
        "eval.turn_cap=2",
        "eval.every=0",
        "curriculum.kind='scaling_inter'",
        "curriculum.caps=[1, 2, 3]",
        "curriculum.stage_steps=2",
    ]
    args = [arg for s in settings for arg in ("--set", s)] if not extra else []
    return subprocess.Popen(
        [sys.executable, "-m", "turnrl.cli", "train", "--out", str(run), "--steps", str(STEPS), *args, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("eta", [0, 1])
def test_sigkill_then_resume(tmp_path, tiny_model, tokenizer, eta):
    base_model = save_policy(tiny_model, tokenizer, tmp_path / "base")
    run = tmp_path / "run"
    first = _train(run, base_model, eta=eta)
    deadline = time.monotonic() + 240
    # kill it once a checkpoint exists and the next step has started (its rows are past the checkpoint)
    while time.monotonic() < deadline and first.poll() is None:
        ckpt = latest_checkpoint(run)
        rows = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
        if ckpt is not None and rows and rows[-1]["step"] > load_trainer_state(ckpt)["step"]:
            break
        time.sleep(0.05)
    assert first.poll() is None, f"the run ended before it could be killed: {first.stderr.read()[-2000:]}"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    stopped_at = load_trainer_state(latest_checkpoint(run))["step"]
    assert 2 <= stopped_at < STEPS

    second = _train(run, base_model, "--resume")
    assert second.wait(240) == 0, second.stderr.read()[-3000:]

    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # every step once: none lost, none twice
    schedule = TurnCapSchedule(CurriculumConfig(kind="scaling_inter", caps=(1, 2, 3), stage_steps=2), "babyai", 3)
    assert [r["turn_cap"] for r in rows] == [schedule.cap(s) for s in range(1, STEPS + 1)]
    assert [r["curriculum_stage"] for r in rows] == [0, 0, 1, 1, 2, 2]
    assert [r["weight_version"] for r in rows] == list(range(1, STEPS + 1))
    assert all(r["staleness/max"] <= eta and r["buffer/staleness_bound"] == eta for r in rows)
    # the tasks trained on are exactly the sampler's for each step, each step's once
    config = json.loads((run / "config.json").read_text())
    sampler = TaskSampler("babyai", get_env_spec("babyai").splits.train, 2, 2, config["seed"])
    for step in range(1, STEPS + 1):
        log = run / "trajectories" / f"step-{step:06d}.jsonl"
        logged = [json.loads(line) for line in log.read_text().splitlines()]
        assert sorted(r["item_id"] for r in logged) == sorted(t.item_id for t in sampler.tasks_for_step(step))
    assert load_trainer_state(latest_checkpoint(run))["step"] == STEPS
