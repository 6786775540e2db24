"""The TextCraft recipe end to end: free text on the recipe's copying base (its warm-up shrunk), two RL steps.

The logged trajectories are replayed in a fresh env: every env answer must be the one TextCraft gives to that
reply, so the run really talks to TextCraft (and at least one reply is a command the env carried out).
"""

from __future__ import annotations

import json

import msgspec

from turnrl.config.train import EvalConfig, ModelConfig
from turnrl.engine.training.loop import Trainer
from turnrl.envs.textcraft import TextCraftEnv
from turnrl.recipes import demo_config


def test_recipe_trains_in_free_text_on_real_textcraft(tmp_path):
    base = demo_config("textcraft", steps=2, out=str(tmp_path / "run"))
    assert base.rollout.episode.constrain_to_valid_actions is False
    assert base.model.path is None and base.env.options["max_depth"] == 1
    default = base.model.default
    assert default.tokenizer_split == "word" and default.induction_init and default.warmup.copy_rehearsal_rows
    episode = msgspec.structs.replace(base.rollout.episode, turn_cap=3)
    config = msgspec.structs.replace(
        base,
        rollout=msgspec.structs.replace(base.rollout, prompts_per_step=2, group_size=4, episode=episode),
        model=ModelConfig(
            default=msgspec.structs.replace(
                base.model.default,
                warmup=msgspec.structs.replace(
                    base.model.default.warmup, episodes=256, turn_cap=3, batch_episodes=8, epochs=2
                ),
            )
        ),
        eval=EvalConfig(tasks=2, turn_cap=3, temperature=0.0),
    )
    summary = Trainer(config).run()
    assert summary["steps"] == 2 and summary["heldout_tasks"] == 2

    env = TextCraftEnv(**config.env.options)
    valid_turns = 0
    for step in (1, 2):
        rows = [json.loads(line) for line in (tmp_path / "run" / "trajectories" / f"step-{step:06d}.jsonl").open()]
        assert len(rows) == 8
        for row in rows:
            first = env.reset_sync(row["item_id"])
            assert first in row["prompt"] and "Goal: craft" in first
            assert 1 <= len(row["turns"]) <= 3
            for turn in row["turns"]:
                result = env.step_sync(turn["action"])
                assert turn["observation"] == result.observation  # the env's own answer to that reply
                assert turn["valid"] == result.info["valid"]
                valid_turns += turn["valid"]
    assert valid_turns > 0, valid_turns
