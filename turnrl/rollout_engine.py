"""The rollout engine as a library, for trainers that bring their own learner.

    async with RolloutEngine(model=model, tokenizer=tokenizer, env="babyai") as engine:
        async for batch in engine.batches(steps=100):
            ...  # batch.input_ids, batch.loss_mask, batch.old_logprobs, batch.rewards, batch.advantages
            await engine.weights_updated()  # after the optimizer step: generation uses the new weights

Invariant: every batch holds the complete groups of one step's tasks, token in /
token out (``input_ids`` are exactly the sampled tokens and the observations
between them; ``old_logprobs`` are the sampling log-probs at the positions of
``loss_mask``); with an advantage estimator named, ``advantages`` are computed over
those groups exactly as turnrl's own learner computes them; the engine closes its
envs and generator on exit, also after an error.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from turnrl.algorithms.base import advantage_inputs
from turnrl.algorithms.registry import get_advantage_estimator
from turnrl.config.algo import AdvantageParams
from turnrl.config.episode import EpisodeConfig
from turnrl.engine.generation.base import Generator
from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.rollout.run import EnvPool, run_episodes
from turnrl.engine.rollout.sampler import TaskSampler
from turnrl.engine.training.batch import pack
from turnrl.envs import get_env_spec, make_env
from turnrl.models.chat import ChatFormat
from turnrl.protocol import Task, Trajectory


@dataclass
class RolloutBatch:
    step: int
    input_ids: torch.Tensor  # [B, T] long, right-padded
    attention_mask: torch.Tensor  # [B, T] long
    loss_mask: torch.Tensor  # [B, T] bool: tokens the policy sampled
    old_logprobs: torch.Tensor  # [B, T] float32: their log-probs at sampling time (0 elsewhere)
    rewards: torch.Tensor  # [B] float32: each trajectory's reward
    advantages: torch.Tensor | None  # [B, T] float32 on loss_mask, when an estimator was named
    trajectories: list[Trajectory]


class RolloutEngine:
    """Episodes of ``env`` sampled by a generator (or an in-process one around ``model``), in batches per step.

    ``tasks``: a ``TaskSampler`` or any ``step -> list[Task]`` (tasks sharing a ``group`` form one group); by
    default ``prompts_per_step`` train items per step, each repeated ``group_size`` times.
    ``advantage``: the name of a registered estimator that needs no critic (grpo, rloo, reinforce_pp), or None.
    """

    def __init__(
        self,
        *,
        tokenizer,
        env: str,
        model=None,
        generator: Generator | None = None,
        env_options: dict | None = None,
        tasks: TaskSampler | Callable[[int], list[Task]] | None = None,
        episode: EpisodeConfig | None = None,
        prompts_per_step: int = 8,
        group_size: int = 8,
        advantage: str | None = "grpo",
        advantage_params: AdvantageParams | None = None,
        concurrency: int = 1024,
        seed: int = 0,
    ):
        if (model is None) == (generator is None):
            raise ValueError("pass exactly one of model (generated in process) or generator")
        spec = get_env_spec(env)
        self.estimator = get_advantage_estimator(advantage) if advantage is not None else None
        if self.estimator is not None and self.estimator.needs_values:
            raise ValueError(f"advantage {advantage!r} needs a critic; use turnrl's Learner or pass advantage=None")
        self.env_options = dict(env_options or {})
        make_env(env, **self.env_options)  # bad env options fail here, before any work
        self.env = env
        self.tokenizer = tokenizer
        self.chat = ChatFormat(tokenizer)
        self.model = model
        self.generator = generator or LocalGenerator(model, tokenizer.pad_token_id, seed=seed)
        if tasks is None:
            tasks = TaskSampler(env, spec.splits.train, prompts_per_step, group_size, seed)
        self.tasks_for_step = tasks.tasks_for_step if isinstance(tasks, TaskSampler) else tasks
        self.episode = episode or EpisodeConfig(turn_cap=spec.default_turn_cap)
        self.advantage_params = advantage_params or AdvantageParams()
        self.concurrency = concurrency
        self.pool = EnvPool(lambda: make_env(env, **self.env_options))

    async def __aenter__(self) -> RolloutEngine:
        return self

    async def __aexit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            await self.pool.close()
        await self.generator.close()

    async def weights_updated(self, model=None, staging_dir: str | Path | None = None) -> int:
        """Call after an optimizer step: the generator serves ``model``'s current weights (default: the model
        the engine was built with) from the next request on; returns the new weight version. In process that is
        a version bump; a service gets the tensors over its socket; servers that load from disk get them through
        ``staging_dir``."""
        model = model if model is not None else self.model
        if model is None:
            raise ValueError("weights_updated needs the model whose weights to serve (the engine was given none)")
        staging = Path(staging_dir) if staging_dir is not None else Path(tempfile.gettempdir()) / "turnrl-weights"
        return await self.generator.push_weights(model, self.tokenizer, staging)

    async def rollout(self, step: int) -> RolloutBatch:
        trajectories = await run_episodes(
            self.tasks_for_step(step), self.pool, self.generator, self.chat, self.episode, self.concurrency
        )
        packed = pack(trajectories, None, self.tokenizer.pad_token_id)
        advantages = None
        if self.estimator is not None:
            inputs = advantage_inputs(
                trajectories, packed.loss_mask, packed.old_logprobs, self.episode.reward_mode == "sum"
            )
            advantages = self.estimator.fn(inputs, self.advantage_params).advantages * packed.loss_mask
        return RolloutBatch(
            step=step,
            input_ids=packed.input_ids,
            attention_mask=packed.attention_mask,
            loss_mask=packed.loss_mask,
            old_logprobs=packed.old_logprobs * packed.loss_mask,
            rewards=torch.tensor([t.reward for t in trajectories], dtype=torch.float32),
            advantages=advantages,
            trajectories=trajectories,
        )

    async def batches(self, steps: int, first_step: int = 1) -> AsyncIterator[RolloutBatch]:
        """One batch per step; the next rollout starts when the caller asks for it (on-policy)."""
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        for step in range(first_step, first_step + steps):
            yield await self.rollout(step)
