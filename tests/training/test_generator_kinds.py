"""A training run whose generations come from a GenerationService process: weights follow every update."""

from __future__ import annotations

import msgspec
import pytest

from turnrl.config.episode import EpisodeConfig
from turnrl.config.generation import GeneratorConfig
from turnrl.config.train import EvalConfig, ModelConfig, RolloutConfig
from turnrl.engine.records.metrics import read_metrics
from turnrl.engine.training.loop import Trainer
from turnrl.models.loading import save_policy
from turnrl.recipes import demo_config


def test_training_through_the_generation_service(tmp_path, tiny_model, tokenizer):
    base_model = save_policy(tiny_model, tokenizer, tmp_path / "base")
    base = demo_config("babyai", steps=2, out=str(tmp_path / "run"))
    config = msgspec.structs.replace(
        base,
        model=ModelConfig(path=str(base_model)),
        rollout=RolloutConfig(
            prompts_per_step=2,
            group_size=2,
            generator=GeneratorConfig(kind="service"),
            episode=EpisodeConfig(turn_cap=2, max_new_tokens=6, constrain_to_valid_actions=True),
        ),
        eval=EvalConfig(tasks=3, turn_cap=2),
    )
    summary = Trainer(config).run()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["weight_version"] for r in rows] == [1, 2]
    assert all(r["train/episodes"] == 4 and r["train/valid_action_rate"] == 1.0 for r in rows)
    assert summary["final_success"] is not None
    # with eta = 0 the buffer drops any token sampled under an older version than the learner's: step 2's
    # episodes all reaching the learner means the service was at version 1 when it sampled them
    assert rows[1]["train/episodes"] == 4 and rows[1].get("buffer/stale_dropped", 0) == 0


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"kind": "vllm"}, "kind must be one of"),
        ({"kind": "sglang"}, "at least one SGLang server"),
        ({"max_running": 0}, "max_running"),
    ],
)
def test_bad_generator_configs(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        GeneratorConfig(**kwargs)
