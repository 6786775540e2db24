"""Format warm-up: supervised training on episodes of *uniformly random valid* actions.

Invariant: the actions are drawn uniformly from the env's valid actions at each turn (or, with
``action_draw="first_word"``, uniformly over their first words and then over the actions starting with the word
drawn), independently of the goal and of the outcome (no oracle, no filtering by reward), so the warmed-up policy
knows the reply format and the action grammar but has no preference for good actions: what it later gains is RL's
doing. The token layout is the one episodes use (``ChatFormat``): loss on the assistant's reply and its end-of-turn
token (and on the observations with ``observation_loss``). A reply token's target is the token the random player
wrote (``reply_targets="sampled"``) or that player's whole next-token distribution there, the share of the listed
replies continuing the prefix with each token (``"listed"``): the same objective in expectation, without the
sampling noise. With ``copy_rehearsal_rows`` every step also trains that many rows of repeated random spans
(``copy_rehearsal``), uniform tokens that carry no task.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from turnrl.config.model import ACTION_DRAWS, WarmupConfig
from turnrl.engine.training.batch import TokenBatch, micro_batches, pack
from turnrl.engine.training.copy_rehearsal import plain_token_ids, repeated_span_batch, repeated_span_nll
from turnrl.envs.base import BlockingEnv
from turnrl.models.chat import ChatFormat
from turnrl.models.constraints import next_token_shares
from turnrl.models.forward import expected_logprobs, hidden_states, logprobs_from_hidden
from turnrl.protocol import Task, Trajectory, Turn


@dataclass
class RandomEpisode:
    system: str
    observations: list[str]  # one per action plus the first
    replies: list[str]  # the policy's reply text for each turn
    success: bool = False  # the episode ended within the turn cap with the env's success
    listed: list[list[str]] = field(default_factory=list)  # the valid actions each reply was drawn from


def warmup_items(train: Sequence[int], episodes: int) -> list[int]:
    """The warm-up's item ids: from the far end of the train split backwards (RL samples the whole split),
    round again when the warm-up asks for more episodes than the split holds (the random actions differ)."""
    if not train:
        raise ValueError("the warm-up needs a non-empty train split")
    return [train[(len(train) - 1 - i) % len(train)] for i in range(episodes)]


_FIRST_WORD = re.compile(r"<?[^\s<>]*>?")


def draw_pool(valid: list[str], action_draw: str = "uniform") -> list[str]:
    """The multiset of ``valid`` a uniform pick from which is the random player's draw: ``valid`` itself for
    ``"uniform"``; for ``"first_word"`` each action repeated so that every first word (``get``, ``<search>``)
    carries the same mass, split evenly among its actions. ``next_token_shares`` counts the repeats, so the listed
    reply targets follow the same draw."""
    if action_draw == "uniform":
        return list(valid)
    if action_draw != "first_word":
        raise ValueError(f"unknown action_draw {action_draw!r}; choose from: {', '.join(ACTION_DRAWS)}")
    groups = [_FIRST_WORD.match(action).group() for action in valid]
    sizes = {word: groups.count(word) for word in groups}
    total = math.lcm(*sizes.values())
    return [action for action, word in zip(valid, groups, strict=True) for _ in range(total // sizes[word])]


def random_episodes(
    env: BlockingEnv, item_ids: list[int], turn_cap: int, seed: int, action_draw: str = "uniform"
) -> list[RandomEpisode]:
    rng = random.Random(seed)
    episodes = []
    for item in item_ids:
        observations = [env.reset_sync(item)]
        actions: list[str] = []
        listed: list[list[str]] = []
        success = False
        for _ in range(turn_cap):
            valid = draw_pool(env.valid_actions_sync(), action_draw)
            action = rng.choice(valid)
            actions.append(action)
            listed.append(valid)
            result = env.step_sync(env.format_reply(action))
            observations.append(result.observation)
            if result.done:
                success = bool(result.info.get("success"))
                break
        replies = [env.format_reply(a) for a in actions]
        listed_replies = [[env.format_reply(a) for a in valid] for valid in listed]
        episodes.append(RandomEpisode(env.system_prompt, observations, replies, success, listed_replies))
    return episodes


def episode_to_trajectory(chat: ChatFormat, episode: RandomEpisode) -> Trajectory:
    """Lay the episode out exactly as a live episode would be (policy tokens masked in), each turn recorded with
    the replies it was drawn from (``Turn.listed``, as an episode learning beside the env's list records them)."""
    eos = chat.stop_token_ids[0]
    ids = chat.prompt_ids(episode.system, episode.observations[0])
    mask = [0] * len(ids)
    turns = []
    for turn, text in enumerate(episode.replies):
        reply = [*chat.encode_text(text), eos]
        listed = [[*chat.encode_text(r), eos] for r in episode.listed[turn]] if episode.listed else None
        turns.append(
            Turn(
                action_start=len(ids),
                action_end=len(ids) + len(reply),
                action_text=text,
                observation=episode.observations[turn + 1] if turn + 1 < len(episode.observations) else "",
                reward=0.0,
                listed=listed,
            )
        )
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
        turns=turns,
    )


def listed_targets(trajectories: list[Trajectory]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every reply token of ``trajectories`` (rows of one packed batch): its (row, position) [M, 2], and the
    random player's next-token distribution there as ids [M, K] (-1 padded) and shares [M, K]."""
    where: list[tuple[int, int]] = []
    targets: list[dict[int, float]] = []
    for row, traj in enumerate(trajectories):
        for turn in traj.turns:
            if turn.listed is None:
                raise ValueError("listed reply targets need the replies each turn was drawn from (Turn.listed)")
            reply = traj.token_ids[turn.action_start : turn.action_end]
            for offset in range(len(reply)):
                shares = next_token_shares(turn.listed, reply[:offset])
                if reply[offset] not in shares:
                    raise ValueError(f"reply {turn.action_text!r} is not one of the replies its turn listed")
                where.append((row, turn.action_start + offset))
                targets.append(shares)
    width = max((len(t) for t in targets), default=1)
    ids = torch.full((len(targets), width), -1, dtype=torch.long)
    shares = torch.zeros((len(targets), width), dtype=torch.float32)
    for i, target in enumerate(targets):
        ids[i, : len(target)] = torch.tensor(list(target), dtype=torch.long)
        shares[i, : len(target)] = torch.tensor(list(target.values()), dtype=torch.float32)
    return torch.tensor(where, dtype=torch.long).reshape(-1, 2), ids, shares


def warmup_logprob_sum(model, trajectories: list[Trajectory], config: WarmupConfig, pad_token_id: int):
    """The summed log-likelihood the warm-up maximises on these trajectories (one micro-batch)."""
    written = dict(constraint_index=None, constraint_allowed=None, constraint_set_target=None, constraint_recorded=None)
    batch = replace(pack(trajectories, None, pad_token_id), **written)  # the tokens as written, never renormalised
    if config.observation_loss:
        batch.loss_mask = batch.attention_mask.bool()
        batch.loss_mask[:, 0] = False
    hidden = hidden_states(model, batch.input_ids, batch.attention_mask)
    weight = model.get_output_embeddings().weight
    if config.reply_targets == "sampled":
        return _written_logprob_sum(hidden, weight, batch)
    index, ids, shares = listed_targets(trajectories)
    batch.loss_mask[index[:, 0], index[:, 1]] = False
    return _written_logprob_sum(hidden, weight, batch) + expected_logprobs(hidden, weight, index, ids, shares).sum()


def _written_logprob_sum(hidden: torch.Tensor, weight: torch.Tensor, batch: TokenBatch) -> torch.Tensor:
    logp = logprobs_from_hidden(hidden, weight, batch.input_ids, batch.loss_mask)[0]
    return (logp * batch.loss_mask).sum()


def supervised_warmup(
    model,
    chat: ChatFormat,
    trajectories: list[Trajectory],
    config: WarmupConfig,
    pad_token_id: int,
    seed: int = 0,
    on_step=None,
) -> list[float]:
    """Next-token cross-entropy on the policy tokens (and observations); returns that loss per optimizer step
    (the copy rehearsal's term, when on, is trained beside it and not counted in it)."""
    rng, rehearsal_rng = random.Random(seed), random.Random(seed + 1)
    rehearsal_ids = plain_token_ids(chat.tokenizer) if config.copy_rehearsal_rows else []
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
                loss = -warmup_logprob_sum(model, [chosen[i] for i in group], config, pad_token_id) / n_tokens
                loss.backward()
                step_loss += float(loss.detach())
            if config.copy_rehearsal_rows:
                ids, mask = repeated_span_batch(rehearsal_rng, rehearsal_ids, config.copy_rehearsal_rows)
                repeated_span_nll(model, ids, mask).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(step_loss)
            if on_step is not None:
                on_step(len(losses), total, step_loss)
    model.eval()
    return losses
