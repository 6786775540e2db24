"""Ready-made run configurations: what ``turnrl train --env FAMILY`` runs with no other flag.

Invariant: a recipe only chooses values; every value is validated by the config
structs, exactly as a user's own would be.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from turnrl.config.algo import LearnerConfig
from turnrl.config.curriculum import CurriculumConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.config.model import EMBEDDED_BASE_FILE, DefaultModelConfig, WarmupConfig
from turnrl.config.train import AlgoConfig, EnvConfig, EvalConfig, ModelConfig, RolloutConfig, TrainConfig
from turnrl.envs import get_env_spec


def copying_base(vocab_size: int, warmup: WarmupConfig) -> DefaultModelConfig:
    """An embedded base that copies what an observation lists, names it never met included, and stops where the
    listed reply ends: words as tokens, an induction circuit kept by copy rehearsal, and a warm-up trained on the
    replies alone against the listed replies' next-token shares (TextCraft's and Deep Search's recipes)."""
    return DefaultModelConfig(
        tokenizer_split="word",
        vocab_size=vocab_size,
        induction_init=True,
        warmup=msgspec.structs.replace(warmup, copy_rehearsal_rows=8, observation_loss=False, reply_targets="listed"),
    )


# The BabyAI demo: GoToLocal on the embedded tiny model, in free text, sized to finish in about a quarter of an
# hour on 2 CPU cores. The tiny model writes its own replies ("Action: ..."), and a reply the env finds invalid
# costs its turn, as in AgentGym. Its format warm-up runs 4800 random-action episodes (the 1600 of other recipes
# left a base whose free-text replies were valid 83 % of the time, greedy), and the learner trains each reply
# beside the env's listed replies (learn_from_listed_actions; bench/RESULTS.md, "Learning suite", has the runs
# behind these choices). Constrained decoding (constrain_to_valid_actions=true) learns faster but trains a policy
# that leaves the list once the constraint is gone. Its tokens start from the words they spell (word_share: the
# goal's "go to the red key" starts near the reply "go to red key 1"), which lifted held-out success at step 100
# on seeds 0-2 from 0.683 to 0.883 on average (bench/RESULTS.md, "Tokens that start from their words"). The demo keeps
# BabyAI's earlier observation layout (the goal on every turn, the actions comma-separated, so a listed action is
# the same token as the reply naming it), the one its learning figures were measured with.
BABYAI_DEMO = TrainConfig(
    env=EnvConfig(family="babyai", options={"level": "GoToLocal", "layout": "turnrl"}),
    rollout=RolloutConfig(
        prompts_per_step=8,
        group_size=8,
        episode=EpisodeConfig(
            turn_cap=6,
            max_new_tokens=16,
            temperature=1.0,
            constrain_to_valid_actions=False,
            learn_from_listed_actions=True,
        ),
    ),
    algo=AlgoConfig(
        name="grpo",
        learner=LearnerConfig(lr=3e-4, minibatches=2, aggregation="seq-mean-token-mean", off_list_advantage=0.25),
    ),
    model=ModelConfig(default=DefaultModelConfig(word_share=0.75, warmup=WarmupConfig(episodes=4800))),
    eval=EvalConfig(tasks=200, turn_cap=6, temperature=0.0, every=25),
    steps=100,
)

# The Deep Search demo: single-hop questions (search, then copy the fact's value out of the passages), free text.
# Every observation lists the searches and answers it allows (show_actions=True: the question, spans of the
# passages seen, each tagged as a reply carries it), and the format warm-up picks uniformly among them, so it
# teaches the tags and copying, not which span. The base is the copying base of TextCraft's recipe
# (``copying_base``): from the phrase-token base, which spelled the world's invented names anew and never closed
# an answer's tag, no rollout succeeded and RL had no signal (0.000 -> 0.000); from this one, greedy replies are
# valid 98 % of the time and names are copied whole, so some rollouts answer right and RL learns which span to
# copy (bench/RESULTS.md, "Learning suite", "A base that copies and stops").
SEARCH_DEMO = TrainConfig(
    env=EnvConfig(family="search", options={"hops": 1, "show_actions": True}),
    rollout=RolloutConfig(
        prompts_per_step=8,
        group_size=8,
        episode=EpisodeConfig(
            turn_cap=4,
            max_new_tokens=24,
            temperature=1.0,
            constrain_to_valid_actions=False,
            learn_from_listed_actions=True,
        ),
    ),
    algo=AlgoConfig(
        name="grpo",
        learner=LearnerConfig(lr=1e-4, minibatches=2, aggregation="seq-mean-token-mean", off_list_advantage=0.25),
    ),
    model=ModelConfig(default=copying_base(2048, WarmupConfig(episodes=3200, turn_cap=2, batch_episodes=4))),
    eval=EvalConfig(tasks=100, turn_cap=4, temperature=0.0, every=10),
    steps=60,
)

# The TextCraft demo: free text, goals of recipe depth 1 (max_depth=1: a deeper id plays a depth-1 goal of its
# own split), so the held-out set is the 23 depth-1 test goals. ``inventory`` is left out of the listing the
# warm-up draws from (list_inventory=False; the command still works): listed, it became the base's commonest
# reply and RL collapsed onto it. Every observation ends with the commands listed now (show_actions=True, which
# AgentGym's TextCraft does not do), so a reply is copied from the observation, and the learner trains replies
# beside the listed ones as BabyAI's recipe does. The base is built to copy names it was never trained on: words
# as tokens (tokenizer_split="word", 1024 of them: 96 % of the held-out goals' reply tokens occur in the warm-up's
# replies, against 79 % for 2048 phrase tokens), layers 0-1 started as an induction circuit and kept copying by
# copy rehearsal, and the warm-up's loss on the replies alone, against the listed replies' next-token shares (with
# the observations in the loss, the copy ran on past a command into the listing's "; get ..." and greedy replies
# were valid 21 % of the time; without, 82 %). RL at lr 3e-4 on this base lost its valid replies (entropy 0.45 ->
# 2.0 in 25 steps); 1e-4 with each reply weighted alike (seq-mean-token-mean) keeps them (bench/RESULTS.md,
# "Learning suite", "A base that copies and stops"). The warm-up draws its random command by first word (get or
# craft, action_draw="first_word"): drawn uniformly, 79 % of its replies were gets, and after RL most held-out
# failures were craft commands copied wrong. A dense term keeps the listed commands' mass (list_log_prob_coef=0.1).
# Together: held-out 0.043 -> 0.391 and 0.043 -> 0.304 in 80 steps on seed 0, 0.174 -> 0.304 on seed 1 (the base's
# first word is a coin toss, so greedy play starts lower; bench/RESULTS.md, "Crafts drawn as often as gets").
TEXTCRAFT_DEMO = TrainConfig(
    env=EnvConfig(family="textcraft", options={"max_depth": 1, "list_inventory": False, "show_actions": True}),
    rollout=RolloutConfig(
        prompts_per_step=8,
        group_size=8,
        episode=EpisodeConfig(
            turn_cap=6,
            max_new_tokens=32,
            temperature=1.0,
            constrain_to_valid_actions=False,
            learn_from_listed_actions=True,
        ),
    ),
    algo=AlgoConfig(
        name="grpo",
        learner=LearnerConfig(
            lr=1e-4, aggregation="seq-mean-token-mean", off_list_advantage=0.25, list_log_prob_coef=0.1
        ),
    ),
    model=ModelConfig(
        default=copying_base(1024, WarmupConfig(episodes=888, turn_cap=8, epochs=3, action_draw="first_word"))
    ),
    eval=EvalConfig(tasks=23, turn_cap=6, temperature=0.0, every=20),
    steps=80,
)

DEMOS = {"babyai": BABYAI_DEMO, "textcraft": TEXTCRAFT_DEMO, "search": SEARCH_DEMO}


def _level_options(env: str, options: dict, level: str) -> dict:
    """``--level``: BabyAI's level name; for search the number of hops (1-4, or ``mix`` for the 1-4 hop mix)."""
    if env != "search":
        return {**options, "level": level}
    if level == "mix":  # the env's default: no hops option
        return {k: v for k, v in options.items() if k != "hops"}
    if not level.isdigit():
        raise ValueError(f"search --level is a number of hops (1-4) or 'mix', got {level!r}")
    return {**options, "hops": int(level)}


def demo_config(
    env: str,
    *,
    algo: str = "grpo",
    model: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    out: str = "runs/latest",
    level: str | None = None,
    curriculum: CurriculumConfig | None = None,
) -> TrainConfig:
    spec = get_env_spec(env)
    base = DEMOS.get(env) or TrainConfig(
        env=EnvConfig(family=env),
        rollout=RolloutConfig(episode=EpisodeConfig(turn_cap=spec.default_turn_cap)),
        eval=EvalConfig(turn_cap=spec.default_turn_cap),
    )
    env_cfg = base.env
    if level is not None:
        env_cfg = msgspec.structs.replace(env_cfg, options=_level_options(env, dict(env_cfg.options), level))
    rollout = base.rollout
    if model is not None and not (Path(model) / EMBEDDED_BASE_FILE).is_file():
        # a real language model writes free text, trained on its own log-probs; constraints and the listed
        # replies are crutches for the tiny default (a base its warm-up saved, RUN/base_model, keeps them)
        episode = msgspec.structs.replace(
            rollout.episode, constrain_to_valid_actions=False, learn_from_listed_actions=False, max_new_tokens=256
        )
        rollout = msgspec.structs.replace(rollout, episode=episode)
    return msgspec.structs.replace(
        base,
        env=env_cfg,
        rollout=rollout,
        algo=msgspec.structs.replace(base.algo, name=algo),
        model=ModelConfig(path=model) if model is not None else base.model,
        curriculum=curriculum or base.curriculum,
        steps=base.steps if steps is None else steps,
        seed=seed,
        out=out,
    )


def constrained_decoding(config: TrainConfig) -> TrainConfig:
    """``config`` with replies sampled only from the env's listed ones (and not also trained beside the list)."""
    episode = config.rollout.episode.constrained()
    return msgspec.structs.replace(config, rollout=msgspec.structs.replace(config.rollout, episode=episode))
