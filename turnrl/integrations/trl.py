"""TRL's GRPO trainer on turnrl's multi-turn rollouts: ``TurnrlRollout`` is a ``rollout_func`` for ``GRPOTrainer``.

    rollout = TurnrlRollout(model=model, tokenizer=tokenizer, env="babyai", env_options={"level": "GoToLocal"},
                            group_size=8)
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=env_reward,
                          args=rollout.grpo_config(output_dir="runs/trl", max_steps=40),
                          train_dataset=rollout.dataset(), rollout_func=rollout)

How the pieces meet (TRL >= 1.0, ``trl/trainer/grpo_trainer.py``): ``GRPOTrainer._generate`` calls
``rollout_func(prompts, trainer)`` and takes ``prompt_ids``, ``completion_ids`` and ``logprobs`` from its answer;
an ``env_mask`` field becomes the trainer's ``tool_mask``, and its loss masks every per-token term with
``completion_mask * tool_mask``; the remaining fields go to the reward functions as keyword arguments. So one
episode is one TRL sample: ``prompt_ids`` the episode's first prompt (system + first observation),
``completion_ids`` every later token exactly as the episode holds them (each turn's sampled reply, then the
observation tokens that follow it: token in / token out, never re-tokenised), ``env_mask`` 1 on sampled tokens and
0 on observation tokens, ``logprobs`` the sampling log-probs (0 on observation tokens), ``env_reward`` the env's
reward (``env_reward`` below hands it to TRL as the reward).

Invariants:
- the tasks of the k-th call are ``TaskSampler(...).tasks_for_step(k)``: ``len(prompts) / num_generations``
  train items, each repeated ``num_generations`` times in consecutive rows, which is how TRL groups rewards
  (``view(-1, num_generations)``); TRL's dataset only paces the calls (its prompt text is not used);
- episodes are sampled from the trainer's own model, in process, with the weights of the latest optimizer step
  (the generator's weight version is bumped whenever TRL's ``global_step`` moved, so no cached prefix outlives an
  update); the model's train/eval mode is restored after each call;
- free-text decoding only: TRL recomputes a token's log-prob over the whole vocabulary at
  ``GRPOConfig.temperature``, so with turnrl's valid-action constraints (log-probs renormalised over the allowed
  tokens) the log-probs TRL trains on would not be the sampled ones; such an ``EpisodeConfig`` is refused.
"""

from __future__ import annotations

import asyncio

import msgspec

from turnrl.config.episode import EpisodeConfig
from turnrl.engine.rollout.sampler import TaskSampler
from turnrl.envs import get_env_spec
from turnrl.protocol import Trajectory
from turnrl.rollout_engine import RolloutEngine

CONSTRAINED_REFUSAL = (
    "TRL's GRPOTrainer recomputes every token's log-prob over the whole vocabulary (it has no hook to restrict "
    "logits per position), so valid-action constrained decoding cannot be trained on faithfully through it: use "
    "constrain_to_valid_actions=False"
)


def env_reward(prompts, completions, env_reward, **kwargs) -> list[float]:
    """The TRL reward function that returns each episode's env reward (as ``TurnrlRollout`` reports it)."""
    return [float(r) for r in env_reward]


def episode_fields(trajectories: list[Trajectory]) -> dict[str, list]:
    """One TRL sample per episode: the fields ``GRPOTrainer`` reads from a ``rollout_func``'s answer."""
    out: dict[str, list] = {
        k: [] for k in ("prompt_ids", "completion_ids", "logprobs", "env_mask", "env_reward", "success", "item_id")
    }
    for t in trajectories:
        p = t.prompt_len
        if len(t.token_ids) <= p:
            raise ValueError(f"episode of item {t.task.item_id} has no completion tokens (end reason {t.end_reason})")
        out["prompt_ids"].append(list(t.token_ids[:p]))
        out["completion_ids"].append(list(t.token_ids[p:]))
        out["env_mask"].append([int(m) for m in t.loss_mask[p:]])
        out["logprobs"].append([float(lp) if m else 0.0 for lp, m in zip(t.logprobs[p:], t.loss_mask[p:], strict=True)])
        out["env_reward"].append(float(t.reward))
        out["success"].append(bool(t.success))
        out["item_id"].append(int(t.task.item_id))
    return out


class TurnrlRollout:
    """A ``rollout_func`` for TRL's ``GRPOTrainer`` (see the module docstring)."""

    def __init__(
        self,
        *,
        model,
        tokenizer,
        env: str,
        group_size: int,
        env_options: dict | None = None,
        episode: EpisodeConfig | None = None,
        seed: int = 0,
        concurrency: int = 1024,
    ):
        if group_size < 2:
            raise ValueError(f"group_size must be >= 2 (GRPO compares episodes within a group), got {group_size}")
        spec = get_env_spec(env)
        episode = episode or EpisodeConfig(turn_cap=spec.default_turn_cap)
        if episode.constrain_to_valid_actions:
            raise ValueError(CONSTRAINED_REFUSAL)
        self.env, self.group_size, self.seed = env, group_size, seed
        self.items = spec.splits.train
        self.model = model
        self.episode = episode
        self.calls = 0
        self.trajectories: list[Trajectory] = []  # the last call's episodes, in TRL's row order
        self._loop = asyncio.new_event_loop()
        self._engine = RolloutEngine(
            model=model,
            tokenizer=tokenizer,
            env=env,
            env_options=env_options,
            tasks=self._tasks,
            episode=episode,
            advantage=None,
            concurrency=concurrency,
            seed=seed,
        )
        self._step_seen: int | None = None
        self._prompts_per_call = 0

    def _tasks(self, call: int):
        return TaskSampler(self.env, self.items, self._prompts_per_call, self.group_size, self.seed).tasks_for_step(
            call
        )

    def grpo_config(self, **overrides):
        """A ``GRPOConfig`` that matches this rollout: groups of ``group_size``, log-probs at the episodes'
        sampling temperature and in float32, no reference model (beta 0), on the CPU; ``overrides`` win."""
        from trl import GRPOConfig

        settings = dict(
            num_generations=self.group_size,
            temperature=self.episode.temperature,
            per_device_train_batch_size=self.group_size * 4,
            max_completion_length=self.episode.max_total_tokens,
            beta=0.0,
            bf16=False,  # the episodes were sampled in float32: TRL's recomputed log-probs must be too
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            mask_truncated_completions=False,
        )
        settings.update(overrides)
        config = GRPOConfig(**settings)
        if config.temperature != self.episode.temperature:
            raise ValueError(
                f"GRPOConfig.temperature ({config.temperature}) must be the episodes' sampling temperature "
                f"({self.episode.temperature}): TRL scales the logits by it when it recomputes log-probs"
            )
        return config

    def dataset(self, size: int = 100_000):
        """The train dataset TRL iterates: rows that only pace the calls (tasks come from ``TaskSampler``)."""
        from datasets import Dataset

        return Dataset.from_dict({"prompt": [f"{self.env} episode {i}" for i in range(size)]})

    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        groups = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        if groups != self.group_size or len(prompts) % groups:
            raise ValueError(
                f"TRL asked for {len(prompts)} completions in groups of {groups}; this rollout samples groups of "
                f"{self.group_size} (set GRPOConfig.num_generations to it)"
            )
        if trainer.accelerator.unwrap_model(trainer.model) is not self.model:
            raise ValueError("TurnrlRollout samples from the model it was given: pass that same model to GRPOTrainer")
        if trainer.temperature != self.episode.temperature:
            raise ValueError(
                f"GRPOConfig.temperature ({trainer.temperature}) must be the episodes' sampling temperature "
                f"({self.episode.temperature})"
            )
        self._prompts_per_call = len(prompts) // groups
        training = self.model.training
        self.model.eval()
        try:
            self.trajectories = self._loop.run_until_complete(self._rollout(trainer.state.global_step))
        finally:
            self.model.train(training)
        self.calls += 1
        return episode_fields(self.trajectories)

    async def _rollout(self, global_step: int) -> list[Trajectory]:
        if self._step_seen is not None and global_step != self._step_seen:
            await self._engine.weights_updated()  # TRL stepped the optimizer: the shared weights changed
        self._step_seen = global_step
        return (await self._engine.rollout(self.calls)).trajectories

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._engine.__aexit__(None, None, None))
            self._loop.close()

    def describe(self) -> dict:
        return {"env": self.env, "group_size": self.group_size, "episode": msgspec.to_builtins(self.episode)}
