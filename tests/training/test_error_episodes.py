"""Episodes that end in a failure during training: ``algo.drop_error_trajectories`` keeps them out of the learner's
batch (the default) or passes them to it; either way the step's row counts them by end reason."""

from __future__ import annotations

import msgspec
import pytest

from turnrl.config.episode import EpisodeConfig
from turnrl.config.train import AlgoConfig, EvalConfig, ModelConfig, RolloutConfig
from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.records.metrics import read_metrics
from turnrl.engine.training.learner import Learner
from turnrl.engine.training.loop import Trainer
from turnrl.errors import ERROR_REASONS, GenerationError
from turnrl.models.loading import save_policy
from turnrl.recipes import demo_config


@pytest.mark.parametrize("drop", [True, False])
def test_error_episodes_are_dropped_or_trained_as_configured(tmp_path, tiny_model, tokenizer, monkeypatch, drop):
    base_model = save_policy(tiny_model, tokenizer, tmp_path / "base")
    base = demo_config("babyai", steps=1, out=str(tmp_path / "run"), algo="grpo")
    config = msgspec.structs.replace(
        base,
        model=ModelConfig(path=str(base_model)),
        algo=AlgoConfig(name="grpo", drop_error_trajectories=drop),
        rollout=RolloutConfig(
            prompts_per_step=2,
            group_size=2,
            episode=EpisodeConfig(turn_cap=2, max_new_tokens=6, constrain_to_valid_actions=True),
        ),
        eval=EvalConfig(tasks=1, turn_cap=1),
    )
    generate, update = LocalGenerator.generate, Learner.update
    failed, trained = [], []

    async def failing_generate(self, request, timeout_s=None):
        # the second turn of every training episode of an odd group fails (step 1's groups are 2 and 3; the
        # evaluation's episodes have one turn)
        _, item, group, _ = request.session_id.split("-")
        if int(group) % 2 == 1 and request.request_id.endswith("-1"):
            failed.append(int(item))
            raise GenerationError("generation failed on purpose")
        return await generate(self, request, timeout_s)

    def recording_update(self, trajectories):
        trained.extend(trajectories)
        return update(self, trajectories)

    monkeypatch.setattr(LocalGenerator, "generate", failing_generate)
    monkeypatch.setattr(Learner, "update", recording_update)
    Trainer(config).run()

    (row,) = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert failed, "no episode of group 3 reached its second turn (the run is seeded: this does not vary)"
    assert row["train/episodes"] == 4 and row["end/gen_error"] == len(failed)
    errors = [t for t in trained if t.end_reason in ERROR_REASONS]
    if drop:
        assert not errors and len(trained) == 4 - len(failed)
    else:
        assert len(trained) == 4 and len(errors) == len(failed)
        assert all(t.end_reason == "gen_error" and len(t.turns) == 1 and t.num_policy_tokens > 0 for t in errors)
