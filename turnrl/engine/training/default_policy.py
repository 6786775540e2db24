"""The embedded default policy, built from nothing: tokenizer, tiny model, format warm-up.

Invariant: built only from the environment's own text and random valid actions
(see ``warmup``; with copy rehearsal also rows of uniformly random tokens, which carry
no task); deterministic for a seed; the result is an ordinary Hugging
Face model directory.
"""

from __future__ import annotations

from turnrl.config.model import DefaultModelConfig
from turnrl.engine.training.warmup import episode_to_trajectory, random_episodes, supervised_warmup
from turnrl.envs.base import BlockingEnv
from turnrl.models.chat import ChatFormat
from turnrl.models.tiny import build_tiny_model
from turnrl.models.tokenizer import train_tokenizer


def build_default_policy(
    env: BlockingEnv, item_ids: list[int], config: DefaultModelConfig, seed: int = 0, on_step=None
):
    """Return (model, tokenizer, warm-up losses) built from random-action episodes of ``env``."""
    episodes = random_episodes(env, item_ids, config.warmup.turn_cap, seed, config.warmup.action_draw)
    corpus = [env.system_prompt]
    for ep in episodes:
        corpus.extend(ep.observations)
        corpus.extend(ep.replies)
    tokenizer = train_tokenizer(corpus, config.vocab_size, config.tokenizer_split)
    model = build_tiny_model(
        tokenizer,
        config.preset,
        config.max_positions,
        seed,
        copy_init_layer=config.copy_init_layer,
        word_share=config.word_share,
        induction_init=config.induction_init,
    )
    chat = ChatFormat(tokenizer)
    trajectories = [episode_to_trajectory(chat, ep) for ep in episodes]
    losses = supervised_warmup(model, chat, trajectories, config.warmup, tokenizer.pad_token_id, seed, on_step)
    return model, tokenizer, losses
