"""A whole (tiny) training run through the real loop: every promised output is written."""

from __future__ import annotations

import json

import msgspec

from turnrl.config import to_dict
from turnrl.config.episode import EpisodeConfig
from turnrl.config.model import EMBEDDED_BASE_FILE, DefaultModelConfig, WarmupConfig
from turnrl.config.train import EvalConfig, ModelConfig, RolloutConfig, TrainConfig
from turnrl.engine.records.checkpoint import latest_checkpoint, load_trainer_state
from turnrl.engine.records.metrics import read_metrics
from turnrl.engine.training.loop import Trainer
from turnrl.models import load_policy
from turnrl.recipes import demo_config


def test_tiny_run_writes_everything(tmp_path):
    base = demo_config("babyai", steps=2, out=str(tmp_path / "run"))
    config = msgspec.structs.replace(
        base,
        rollout=RolloutConfig(prompts_per_step=2, group_size=2, episode=EpisodeConfig(turn_cap=2, max_new_tokens=6)),
        model=ModelConfig(
            default=DefaultModelConfig(vocab_size=400, warmup=WarmupConfig(episodes=8, turn_cap=2, batch_episodes=4))
        ),
        eval=EvalConfig(tasks=3, turn_cap=2),
    )
    summary = Trainer(config).run()
    run = tmp_path / "run"
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["train/episodes"] == 4 and 0 <= r["train/success_rate"] <= 1 for r in rows)
    assert rows[-1]["weight_version"] == 2
    logged = sorted(p.name for p in (run / "trajectories").glob("step-*.jsonl"))
    assert logged == ["step-000001.jsonl", "step-000002.jsonl"]
    assert len((run / "trajectories" / "step-000002.jsonl").read_text().splitlines()) == 4
    for row in rows:  # throughput and staleness are logged every step; eta = 0 trains only current tokens
        assert row["throughput/tokens_per_s"] > 0 and row["throughput/env_steps_per_s"] > 0
        assert 0 < row["throughput/generator_busy_fraction"] <= 1.0001
        assert row["staleness/max"] == 0
    saved = json.loads((run / "summary.json").read_text())
    for key in ("initial_success", "final_success", "heldout_tasks", "steps", "wall_seconds", "level", "eval_turn_cap"):
        assert key in saved
    assert saved == json.loads(json.dumps(summary))
    assert saved["heldout_tasks"] == 3 and saved["steps"] == 2 and saved["level"] == "GoToLocal"
    assert (run / "success_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and load_trainer_state(ckpt)["step"] == 2
    model, tokenizer = load_policy(ckpt)
    assert tokenizer.chat_template and sum(p.numel() for p in model.parameters()) == saved["parameters"]
    assert json.loads((run / "config.json").read_text())["steps"] == 2
    load_policy(run / "base_model")
    # the base says what built it, and training from it again keeps the recipe's episode (listed-reply training,
    # short replies); a model directory without that file is taken for a real language model's
    marker = json.loads((run / "base_model" / EMBEDDED_BASE_FILE).read_text())
    assert marker["family"] == "babyai" and marker["default"] == to_dict(config.model.default)
    again = demo_config("babyai", model=str(run / "base_model"))
    assert again.rollout.episode == demo_config("babyai").rollout.episode
    assert again.model.path == str(run / "base_model")
    other = demo_config("babyai", model=str(ckpt)).rollout.episode
    assert not other.learn_from_listed_actions and other.max_new_tokens == 256


def test_training_wheels_constrain_the_first_steps_only(tmp_path):
    base = demo_config("babyai", steps=3, out=str(tmp_path / "run"))  # free text, replies trained beside the list
    assert base.rollout.episode.learn_from_listed_actions and not base.rollout.episode.constrain_to_valid_actions
    config = msgspec.structs.replace(
        base,
        rollout=msgspec.structs.replace(
            base.rollout,
            prompts_per_step=2,
            group_size=2,
            episode=msgspec.structs.replace(base.rollout.episode, turn_cap=2, max_new_tokens=6),
            constrained_steps=2,
        ),
        model=ModelConfig(
            default=DefaultModelConfig(vocab_size=400, warmup=WarmupConfig(episodes=8, turn_cap=2, batch_episodes=4))
        ),
        eval=EvalConfig(tasks=3, turn_cap=2),
    )
    summary = Trainer(config).run()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["rollout/constrained"] for r in rows] == [1.0, 1.0, 0.0]
    assert [r["train/valid_action_rate"] for r in rows[:2]] == [1.0, 1.0]  # under the list, every reply is valid
    assert rows[2]["train/valid_action_rate"] < 1.0  # an 8-episode warm-up writes free text off the list
    assert summary["decoding"] == "free text"  # the held-out evaluations read free text throughout
    always = RolloutConfig(episode=EpisodeConfig(constrain_to_valid_actions=True))
    assert always.constrained_at(1000) and not RolloutConfig(constrained_steps=2).constrained_at(3)


def test_bad_configs_are_rejected():
    import pytest

    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=-1)
    with pytest.raises(ValueError, match="group_size"):
        RolloutConfig(group_size=1)
    with pytest.raises(ValueError, match=r"eval\.tasks"):
        EvalConfig(tasks=0)
    with pytest.raises(ValueError, match="lr"):
        from turnrl.config.algo import LearnerConfig

        LearnerConfig(lr=-1.0)


def test_throughput_metrics_hand_computed():
    from turnrl.engine.generation.base import GeneratorStats
    from turnrl.engine.records.step_row import generation_metrics, throughput_metrics
    from turnrl.protocol import Task, Trajectory, Turn

    turn = Turn(action_start=1, action_end=3, reward=0.0, valid=True, observation="", action_text="")
    traj = Trajectory(
        task=Task(env="babyai", item_id=0),
        token_ids=[5, 6, 7],
        loss_mask=[0, 1, 1],
        logprobs=[0.0, -1.0, -1.0],
        versions=[-1, 0, 1],
        prompt_len=1,
        turns=[turn, turn],
    )
    row = throughput_metrics([traj], 2.0, learner_version=2)
    assert row["throughput/env_steps_per_s"] == 1.0 and row["throughput/tokens_per_s"] == 1.0
    assert row["staleness/mean"] == 1.5 and row["staleness/max"] == 2.0
    before = GeneratorStats(busy_seconds=1.0, prefix_lookups=4, prefix_hits=1, prefill_tokens=100, reused_tokens=0)
    after = GeneratorStats(busy_seconds=2.5, prefix_lookups=10, prefix_hits=4, prefill_tokens=130, reused_tokens=60)
    gen = generation_metrics(before, after, rollout_seconds=3.0, turns=6)
    assert gen == {
        "throughput/generator_busy_fraction": 0.5,
        "generation/prefix_hit_rate": 0.5,
        "generation/prefill_tokens_per_turn": 5.0,
        "generation/reused_tokens_per_turn": 10.0,
        "generation/shared_prefill_tokens": 0,
    }
    assert generation_metrics(before, before, rollout_seconds=3.0, turns=6) == {}  # a generator that counts nothing
