"""A run stopped after any checkpoint continues where it stopped: step, turn-cap stage, versions, learner state."""

from __future__ import annotations

import json
import os
import pickle

import msgspec
import pytest

from turnrl.config.curriculum import CurriculumConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.config.train import EvalConfig, ModelConfig, RolloutConfig
from turnrl.engine.records.checkpoint import latest_checkpoint, load_learner_state, load_trainer_state
from turnrl.engine.records.metrics import read_metrics
from turnrl.engine.training.loop import Trainer
from turnrl.errors import CheckpointError
from turnrl.models.loading import save_policy
from turnrl.recipes import demo_config


@pytest.fixture()
def config_for(tmp_path, tiny_model, tokenizer):
    base_model = save_policy(tiny_model, tokenizer, tmp_path / "base")

    def build(out, steps):
        base = demo_config("babyai", steps=steps, out=str(out), algo="ppo")
        return msgspec.structs.replace(
            base,
            model=ModelConfig(path=str(base_model)),
            checkpoint_every=1,
            rollout=RolloutConfig(
                prompts_per_step=2,
                group_size=2,
                episode=EpisodeConfig(turn_cap=2, max_new_tokens=6, constrain_to_valid_actions=True),
            ),
            curriculum=CurriculumConfig(kind="scaling_inter", caps=(1, 2), stage_steps=2),
            eval=EvalConfig(tasks=3, turn_cap=2, every=0),
        )

    return build


def test_resumed_run_continues_in_the_same_stage(tmp_path, config_for):
    run = tmp_path / "run"
    first = Trainer(config_for(run, 3)).run()
    # stopped after step 3 wrote its metrics row but before its checkpoint became the latest
    (run / "latest").write_text("checkpoint-000002")
    assert load_trainer_state(latest_checkpoint(run))["step"] == 2
    second = Trainer(config_for(run, 4), resume=True).run()

    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["turn_cap"] for r in rows] == [1, 1, 2, 2]
    assert [r["curriculum_stage"] for r in rows] == [0, 0, 1, 1]
    assert [r["weight_version"] for r in rows] == [1, 2, 3, 4]
    assert second["evals"][0] == first["evals"][0]  # the initial evaluation is kept, not redone
    assert [e["step"] for e in second["evals"]] == [0, 4]
    final = latest_checkpoint(run)
    state = load_trainer_state(final)
    assert state["step"] == 4 and state["weight_version"] == 4
    learner_state = load_learner_state(final)
    assert learner_state["updates"] == 4 and "critic" in learner_state
    assert json.loads((run / "summary.json").read_text())["steps"] == 4


def test_nothing_to_resume_is_an_error(tmp_path, config_for):
    with pytest.raises(ValueError, match="nothing to resume"):
        Trainer(config_for(tmp_path / "empty", 2), resume=True)


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_checkpoint_with_a_pickle_is_refused_before_anything_is_read(tmp_path, config_for):
    run = tmp_path / "run"
    Trainer(config_for(run, 1)).run()
    marker = tmp_path / "code-ran"
    (latest_checkpoint(run) / "learner.pt").write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError, match=r"learner\.pt.*hold no pickle"):
        Trainer(config_for(run, 2), resume=True).run()
    assert not marker.exists()
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1]  # nothing redone, nothing dropped
