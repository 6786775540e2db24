"""TRL's GRPOTrainer on turnrl's rollouts: the mask TRL's loss uses, the log-probs it sees, the groups, bad input."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("trl")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from trl import GRPOTrainer

from turnrl.config.episode import EpisodeConfig
from turnrl.engine.rollout.sampler import TaskSampler
from turnrl.envs import get_env_spec
from turnrl.integrations.trl import TurnrlRollout, env_reward, episode_fields
from turnrl.protocol import Task, Trajectory, Turn

G = 4


def _rollout(model, tokenizer, **kw) -> TurnrlRollout:
    episode = kw.pop("episode", EpisodeConfig(turn_cap=3, max_new_tokens=6))
    return TurnrlRollout(
        model=model, tokenizer=tokenizer, env="babyai", env_options={"level": "GoToLocal"}, group_size=G,
        episode=episode, seed=kw.pop("seed", 0), **kw,
    )  # fmt: skip


def _trainer(rollout, model, tokenizer, tmp_path, reward_funcs, **overrides) -> GRPOTrainer:
    settings = dict(
        output_dir=str(tmp_path / "trl"),
        max_steps=2,
        per_device_train_batch_size=2 * G,
        learning_rate=1e-3,
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=0,
    )
    config = rollout.grpo_config(**{**settings, **overrides})
    return GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=rollout.dataset(64),
        rollout_func=rollout,
    )


def _row_of(trajectories: list[Trajectory], prompt: list[int], completion: list[int]) -> Trajectory:
    found = [t for t in trajectories if t.token_ids == prompt + completion]
    assert found, "a TRL row is none of the sampled episodes"
    return found[0]


def test_trl_steps_mask_observations_and_see_the_sampled_logprobs(tiny_model, tokenizer, tmp_path):
    model = tiny_model.train()
    rollout = _rollout(model, tokenizer)
    seen_rewards: list[list[float]] = []

    def token_sum(prompts, completions, completion_ids, env_reward, **kwargs):
        # a reward that differs within a group (sampled tokens differ), so the loss has advantages to pass on
        seen_rewards.append(list(env_reward))
        return [float(sum(ids) % 97) for ids in completion_ids]

    trainer = _trainer(rollout, model, tokenizer, tmp_path, [token_sum])
    original = trainer._compute_loss
    first: dict = {}

    def spy(model_, inputs):
        if first:
            return original(model_, inputs)
        first["trajectories"] = list(rollout.trajectories)
        first["inputs"] = inputs
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        with torch.no_grad():  # what TRL's loss computes as the current log-probs, before any update
            first["logps"], _, _ = trainer._get_per_token_logps_and_entropies(
                model_, ids, attention, inputs["completion_ids"].size(1)
            )
        # TRL scores tokens with a fused LM head (no logits tensor), so take the gradient one step earlier: the
        # final hidden state at position j feeds only the prediction of token j + 1
        hidden = []

        def keep(module, args, out) -> None:
            out.retain_grad()
            hidden.append(out)

        hook = model_.model.norm.register_forward_hook(keep)
        try:
            loss = original(model_, inputs)
        finally:
            hook.remove()
        loss.backward(retain_graph=True)  # TRL's own backward comes after; we only read this one's gradient
        first["loss"], first["hidden"] = loss, hidden[0]
        first["grad"] = hidden[0].grad.clone()
        hidden[0].grad = None
        model_.zero_grad(set_to_none=True)
        return loss

    trainer._compute_loss = spy
    trainer.train()
    rollout.close()

    assert rollout.calls == 2 and trainer.state.global_step == 2
    assert first["loss"].requires_grad
    inputs, trajectories = first["inputs"], first["trajectories"]
    assert seen_rewards[0] == [t.reward for t in trajectories]  # the env's reward reaches TRL's reward functions
    p = inputs["prompt_ids"].size(1)
    grad = first["grad"][:, p - 1 : -1]  # d loss / d final hidden state; row position c predicts completion token c
    mask_used = inputs["completion_mask"] * inputs["tool_mask"]  # what TRL's loss multiplies every term by
    observation_positions = 0
    action_grads = []
    for row in range(inputs["completion_ids"].size(0)):
        prompt = inputs["prompt_ids"][row][inputs["prompt_mask"][row].bool()].tolist()
        n = int(inputs["completion_mask"][row].sum())
        completion = inputs["completion_ids"][row][:n].tolist()
        t = _row_of(trajectories, prompt, completion)
        sampled = t.loss_mask[t.prompt_len :]
        assert mask_used[row][:n].tolist() == sampled
        assert mask_used[row][n:].sum() == 0
        obs = [c for c, m in enumerate(sampled) if m == 0]
        act = [c for c, m in enumerate(sampled) if m == 1]
        observation_positions += len(obs)
        if obs:
            assert torch.count_nonzero(grad[row, obs]) == 0  # observation tokens carry no gradient
        action_grads.append(grad[row, act].abs().sum())
        logprobs = torch.tensor([lp for lp, m in zip(t.logprobs[t.prompt_len :], sampled, strict=True) if m])
        assert torch.allclose(inputs["sampling_per_token_logps"][row][act], logprobs, atol=1e-6)
        assert torch.allclose(first["logps"][row][act], logprobs, atol=2e-4), "TRL's log-probs are not the sampled"
    assert observation_positions > 0  # multi-turn episodes: observations inside the completions
    assert sum(action_grads) > 0  # and the sampled tokens do get a gradient


def test_groups_come_from_turnrls_sampler(tiny_model, tokenizer, tmp_path):
    rollout = _rollout(tiny_model, tokenizer, seed=3)
    calls = []

    def record(prompts, completions, item_id, success, **kwargs):
        calls.append(list(item_id))
        return [float(s) for s in success]

    trainer = _trainer(rollout, tiny_model, tokenizer, tmp_path, [record, env_reward], max_steps=1)
    trainer.train()
    rollout.close()
    expected = TaskSampler("babyai", get_env_spec("babyai").splits.train, 2, G, seed=3).tasks_for_step(0)
    assert calls[0] == [t.item_id for t in expected]
    assert [t.task.item_id for t in rollout.trajectories] == calls[0]
    for g in range(2):  # consecutive rows of one item form one of TRL's groups
        assert len({t.task.group for t in rollout.trajectories[g * G : (g + 1) * G]}) == 1


def test_episode_fields_layout():
    task = Task(env="babyai", item_id=7, group=0)
    t = Trajectory(
        task=task,
        token_ids=[1, 2, 3, 10, 11, 4, 5, 12],
        loss_mask=[0, 0, 0, 1, 1, 0, 0, 1],
        logprobs=[0.0, 0.0, 0.0, -0.5, -0.25, 9.0, 9.0, -1.5],
        versions=[0] * 8,
        prompt_len=3,
        turns=[Turn(action_start=3, action_end=5, action_text="a", observation="o", reward=0.0)],
        reward=0.5,
        success=True,
    )
    fields = episode_fields([t])
    assert fields["prompt_ids"] == [[1, 2, 3]]
    assert fields["completion_ids"] == [[10, 11, 4, 5, 12]]
    assert fields["env_mask"] == [[1, 1, 0, 0, 1]]
    assert fields["logprobs"] == [[-0.5, -0.25, 0.0, 0.0, -1.5]]
    assert fields["env_reward"] == [0.5] and fields["success"] == [True] and fields["item_id"] == [7]
    empty = Trajectory(task=task, token_ids=[1, 2], loss_mask=[0, 0], logprobs=[0, 0], versions=[0, 0], prompt_len=2)
    with pytest.raises(ValueError, match="no completion tokens"):
        episode_fields([empty])


def test_bad_settings_are_refused(tiny_model, tokenizer, tmp_path):
    constrained = EpisodeConfig(turn_cap=3, max_new_tokens=6, constrain_to_valid_actions=True)
    with pytest.raises(ValueError, match="whole vocabulary"):
        _rollout(tiny_model, tokenizer, episode=constrained)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        TurnrlRollout(model=tiny_model, tokenizer=tokenizer, env="babyai", group_size=1)
    with pytest.raises(ValueError, match="unknown env"):
        TurnrlRollout(model=tiny_model, tokenizer=tokenizer, env="nope", group_size=4)
    rollout = _rollout(tiny_model, tokenizer)
    with pytest.raises(ValueError, match="sampling temperature"):
        rollout.grpo_config(output_dir=str(tmp_path), temperature=0.7)
    trainer = _trainer(rollout, tiny_model, tokenizer, tmp_path, env_reward, num_generations=2)
    with pytest.raises(ValueError, match="groups of 4"):
        trainer.train()
    rollout.close()


def test_the_example_runs_end_to_end(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    args = ["--steps", "2", "--prompts", "2", "--group-size", "2", "--eval-tasks", "3", "--eval-every", "1"]
    args += ["--warmup-episodes", "8", "--turn-cap", "2", "--out", str(tmp_path / "run")]
    run = subprocess.run(
        [sys.executable, str(root / "examples" / "trl_babyai.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [row["step"] for row in summary["heldout"]] == [0, 1, 2]
    assert all(0.0 <= row["success"] <= 1.0 for row in summary["heldout"])
    assert (
        summary["heldout"][0]["success"] == summary["before"] and summary["heldout"][-1]["success"] == summary["after"]
    )
    assert (tmp_path / "run" / "base_model" / "config.json").is_file()
    assert "held-out success" in run.stdout
