"""The rollout engine as a library: batches line up with their trajectories; the documented example runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from turnrl import RolloutEngine
from turnrl.algorithms.grpo import grpo  # noqa: F401 - registers the estimator
from turnrl.config.episode import EpisodeConfig
from turnrl.models.loading import save_policy

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "embed_training_loop.py"


async def test_batches_line_up_with_trajectories(tiny_model, tokenizer):
    episode = EpisodeConfig(turn_cap=2, max_new_tokens=6, constrain_to_valid_actions=True)
    async with RolloutEngine(
        model=tiny_model, tokenizer=tokenizer, env="babyai", episode=episode, prompts_per_step=2, group_size=3
    ) as engine:
        batches = [batch async for batch in engine.batches(2)]
    assert [b.step for b in batches] == [1, 2]
    for batch in batches:
        assert len(batch.trajectories) == 6 and batch.input_ids.shape[0] == 6
        for row, traj in enumerate(batch.trajectories):
            n = len(traj.token_ids)
            assert batch.input_ids[row, :n].tolist() == traj.token_ids
            assert batch.loss_mask[row, 1:n].tolist() == [bool(m) for m in traj.loss_mask[1:]]
            torch.testing.assert_close(
                batch.old_logprobs[row, :n][batch.loss_mask[row, :n]],
                torch.tensor(traj.logprobs)[batch.loss_mask[row, :n]],
            )
            assert batch.rewards[row] == pytest.approx(traj.reward)
        # GRPO: within a group of 3, advantages are (r - mean) / std, broadcast to the policy tokens
        rewards = torch.tensor([t.reward for t in batch.trajectories], dtype=torch.float64).view(2, 3)
        expected = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-6)
        for row in range(6):
            values = batch.advantages[row][batch.loss_mask[row]]
            assert torch.allclose(values.double(), expected.view(-1)[row].expand_as(values), atol=1e-5)
        assert not batch.advantages[~batch.loss_mask].any()


def test_bad_arguments(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="exactly one of model"):
        RolloutEngine(tokenizer=tokenizer, env="babyai")
    with pytest.raises(ValueError, match="needs a critic"):
        RolloutEngine(model=tiny_model, tokenizer=tokenizer, env="babyai", advantage="ppo")
    with pytest.raises(ValueError, match="unknown env"):
        RolloutEngine(model=tiny_model, tokenizer=tokenizer, env="chess")


def test_the_documented_example_runs(tiny_model, tokenizer, tmp_path):
    model_dir = save_policy(tiny_model, tokenizer, tmp_path / "model")
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--model", str(model_dir), "--steps", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 1", "step 2"]
    assert all("16 episodes" in line for line in lines)
