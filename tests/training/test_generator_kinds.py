"""Training runs whose generations come from a GenerationService process or a generator with its own weights:
weights follow every update, and with eta > 0 generation goes on while the learner updates."""

from __future__ import annotations

import msgspec
import pytest

from turnrl.config.episode import EpisodeConfig
from turnrl.config.generation import GeneratorConfig
from turnrl.config.train import EvalConfig, ModelConfig, RolloutConfig
from turnrl.engine.records.metrics import read_metrics
from turnrl.engine.training.loop import Trainer
from turnrl.errors import ERROR_REASONS
from turnrl.models.loading import save_policy
from turnrl.recipes import demo_config


def _config(tmp_path, tiny_model, tokenizer, *, steps: int, turn_cap: int, eval_tasks: int, **rollout):
    """A small BabyAI run from the tiny model: 2 prompts x 2 episodes per step, constrained replies."""
    base_model = save_policy(tiny_model, tokenizer, tmp_path / "base")
    base = demo_config("babyai", steps=steps, out=str(tmp_path / "run"))
    return msgspec.structs.replace(
        base,
        model=ModelConfig(path=str(base_model)),
        rollout=RolloutConfig(
            prompts_per_step=2,
            group_size=2,
            episode=EpisodeConfig(turn_cap=turn_cap, max_new_tokens=6, constrain_to_valid_actions=True),
            **rollout,
        ),
        eval=EvalConfig(tasks=eval_tasks, turn_cap=2),
    )


def test_training_through_the_generation_service(tmp_path, tiny_model, tokenizer):
    config = _config(
        tmp_path,
        tiny_model,
        tokenizer,
        steps=2,
        turn_cap=2,
        eval_tasks=3,
        generator=GeneratorConfig(kind="service", torch_threads=1),  # the service on one core, as on a CPU split
    )
    summary = Trainer(config).run()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["weight_version"] for r in rows] == [1, 2]
    assert all(r["train/episodes"] == 4 and r["train/valid_action_rate"] == 1.0 for r in rows)
    assert summary["final_success"] is not None
    # with eta = 0 the buffer drops (and counts, in every row) any episode sampled under an older version than
    # the learner's: none dropped and all 4 trained means the service took each update before sampling again
    assert [r["buffer/stale_dropped"] for r in rows] == [0, 0] and [r["train/episodes"] for r in rows] == [4, 4]
    for row in rows:
        assert_every_episode_ended_cleanly(row)


def assert_every_episode_ended_cleanly(row: dict) -> None:
    """Every trained episode has one end reason in the row, and none is a failure (end/* keys are only written
    for reasons that occurred, so the sum is what can fail)."""
    ends = {key: count for key, count in row.items() if key.startswith("end/")}
    assert sum(ends.values()) == row["train/episodes"], ends
    assert not {key.removeprefix("end/") for key in ends} & ERROR_REASONS, ends


@pytest.mark.parametrize(
    ("kind", "in_flight"), [("service", "continue"), ("service", "abort"), ("local", "continue"), ("local", "abort")]
)
def test_overlapped_training_keeps_the_staleness_bound(tmp_path, tiny_model, tokenizer, kind, in_flight):
    config = _config(
        tmp_path,
        tiny_model,
        tokenizer,
        steps=4,
        turn_cap=3,
        eval_tasks=3,
        staleness=1,
        generator=GeneratorConfig(kind=kind, in_flight=in_flight),
    )
    Trainer(config).run()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and [r["weight_version"] for r in rows] == [1, 2, 3, 4]
    for row in rows:  # every token trained at most one version after it was sampled, and no episode lost
        assert row["staleness/max"] <= 1 and row["buffer/staleness_bound"] == 1
        assert_every_episode_ended_cleanly(row)
    assert sum(r["train/episodes"] for r in rows) + rows[-1]["buffer/stale_dropped"] == 16


def test_a_learner_that_raises_stops_the_run_with_its_error(tmp_path, tiny_model, tokenizer, monkeypatch):
    from turnrl.engine.training.learner import Learner

    def broken(self, trajectories):
        raise RuntimeError("the learner broke")

    monkeypatch.setattr(Learner, "update", broken)
    config = _config(tmp_path, tiny_model, tokenizer, steps=3, turn_cap=2, eval_tasks=2, staleness=2)
    with pytest.raises(RuntimeError, match="the learner broke"):
        Trainer(config).run()
    assert not (tmp_path / "run" / "metrics.jsonl").read_text().strip()  # no step was recorded as done


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"kind": "vllm"}, "kind must be one of"),
        ({"kind": "sglang"}, "at least one SGLang server"),
        ({"max_running": 0}, "max_running"),
        ({"torch_threads": 0}, "torch_threads"),
        ({"weights": "mirror"}, "weights must be one of"),
        ({"in_flight": "drop"}, "in_flight must be"),
    ],
)
def test_bad_generator_configs(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        GeneratorConfig(**kwargs)
