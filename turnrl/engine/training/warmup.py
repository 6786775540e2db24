"""Format warm-up: supervised training on episodes of *uniformly random valid* actions.

Invariant: the actions are drawn uniformly from the env's valid actions at each
turn, independently of the goal and of the outcome (no oracle, no filtering by
reward), so the warmed-up policy knows the reply format and the action grammar
but has no preference for good actions: what it later gains is RL's doing. The
token layout is the one episodes use (``ChatFormat``): loss only on the
assistant's reply and its end-of-turn token.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from turnrl.config.model import WarmupConfig
from turnrl.engine.training.batch import micro_batches, pack, policy_logprobs
from turnrl.envs.base import BlockingEnv
from turnrl.models.chat import ChatFormat
from turnrl.protocol import Task, Trajectory


@dataclass
class RandomEpisode:
    system: str
    observations: list[str]  # one per action plus the first
    replies: list[str]  # the policy's reply text for each turn
    success: bool = False  # the episode ended within the turn cap with the env's success


def warmup_items(train: Sequence[int], episodes: int) -> list[int]:
    """The warm-up's item ids: from the far end of the train split backwards (RL samples the whole split),
    round again when the warm-up asks for more episodes than the split holds (the random actions differ)."""
    if not train:
        raise ValueError("the warm-up needs a non-empty train split")
    return [train[(len(train) - 1 - i) % len(train)] for i in range(episodes)]


def random_episodes(env: BlockingEnv, item_ids: list[int], turn_cap: int, seed: int) -> list[RandomEpisode]:
    rng = random.Random(seed)
    episodes = []
    for item in item_ids:
        observations = [env.reset_sync(item)]
        actions: list[str] = []
        success = False
        for _ in range(turn_cap):
            action = rng.choice(env.valid_actions_sync())
            actions.append(action)
            result = env.step_sync(env.format_reply(action))
            observations.append(result.observation)
            if result.done:
                success = bool(result.info.get("success"))
                break
        replies = [env.format_reply(a) for a in actions]
        episodes.append(RandomEpisode(env.system_prompt, observations, replies, success))
    return episodes


def episode_to_trajectory(chat: ChatFormat, episode: RandomEpisode) -> Trajectory:
    """Lay the episode out exactly as a live episode would be (policy tokens masked in)."""
    eos = chat.stop_token_ids[0]
    ids = chat.prompt_ids(episode.system, episode.observations[0])
    mask = [0] * len(ids)
    for turn, text in enumerate(episode.replies):
        reply = [*chat.encode_text(text), eos]
        ids += reply
        mask += [1] * len(reply)
        if turn + 1 < len(episode.observations):
            cont = chat.continuation_ids(episode.observations[turn + 1], reply)
            ids += cont
            mask += [0] * len(cont)
    return Trajectory(
        task=Task(env="warmup", item_id=0),
        token_ids=ids,
        loss_mask=mask,
        logprobs=[0.0] * len(ids),
        versions=[-1] * len(ids),
        prompt_len=0,
    )


def supervised_warmup(
    model,
    chat: ChatFormat,
    trajectories: list[Trajectory],
    config: WarmupConfig,
    pad_token_id: int,
    seed: int = 0,
    on_step=None,
) -> list[float]:
    """Next-token cross-entropy on the policy tokens; returns the loss per optimizer step."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.98), weight_decay=0.0)
    steps_per_epoch = math.ceil(len(trajectories) / config.batch_episodes)
    total = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, total // 10)) * max(0.05, 1 - s / total)
    )
    losses = []
    model.train()
    for _ in range(config.epochs):
        order = list(range(len(trajectories)))
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_episodes):
            chosen = [trajectories[i] for i in order[start : start + config.batch_episodes]]
            n_tokens = sum(len(t.token_ids) - 1 if config.observation_loss else t.num_policy_tokens for t in chosen)
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for group in micro_batches([len(t.token_ids) for t in chosen], config.micro_batch_tokens):
                batch = pack([chosen[i] for i in group], None, pad_token_id)
                if config.observation_loss:
                    batch.loss_mask = batch.attention_mask.bool()
                    batch.loss_mask[:, 0] = False
                logp, _ = policy_logprobs(model, batch)
                loss = -(logp * batch.loss_mask).sum() / n_tokens
                loss.backward()
                step_loss += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(step_loss)
            if on_step is not None:
                on_step(len(losses), total, step_loss)
    model.eval()
    return losses
