"""Ready-made run configurations: what ``turnrl train --env FAMILY`` runs with no other flag.

Invariant: a recipe only chooses values; every value is validated by the config
structs, exactly as a user's own would be.
"""

from __future__ import annotations

import msgspec

from turnrl.config.algo import LearnerConfig
from turnrl.config.curriculum import CurriculumConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.config.model import DefaultModelConfig, WarmupConfig
from turnrl.config.train import AlgoConfig, EnvConfig, EvalConfig, ModelConfig, RolloutConfig, TrainConfig
from turnrl.envs import get_env_spec

# The BabyAI demo: GoToLocal on the embedded tiny model, sized to finish in about ten minutes on 2 CPU cores.
# The tiny model decodes under valid-action constraints (it samples only replies that perform an action the
# environment lists as available); a large model given with --model writes free text instead. The demo keeps
# BabyAI's earlier observation layout (the goal on every turn), the one its learning figures were measured
# with: one run with AgentGym's layout (the goal only in the first observation) reached held-out success
# 0.455 at step 40, where the runs in bench/RESULTS.md with this layout reached 0.71-0.805 (not side by side).
BABYAI_DEMO = TrainConfig(
    env=EnvConfig(family="babyai", options={"level": "GoToLocal", "layout": "turnrl"}),
    rollout=RolloutConfig(
        prompts_per_step=8,
        group_size=8,
        episode=EpisodeConfig(turn_cap=6, max_new_tokens=16, temperature=1.0, constrain_to_valid_actions=True),
    ),
    algo=AlgoConfig(
        name="grpo",
        learner=LearnerConfig(lr=3e-4, minibatches=2, aggregation="seq-mean-token-mean"),
    ),
    eval=EvalConfig(tasks=200, turn_cap=6, temperature=0.0, every=40),
    steps=120,
)

# The TextCraft demo: free text on the embedded tiny model (no constraints), goals of recipe depth 1 (env
# option max_depth=1: a deeper id plays a depth-1 goal of its own split), so the held-out set is the 23 depth-1
# test goals (eval.tasks=23: the first 23 test ids; more would repeat them). ``inventory`` is left out of the
# listing the warm-up draws from (list_inventory=False; the command still works): listed, it became the base's
# commonest reply (greedy: inventory every turn) and RL with a penalty collapsed onto it. Measured on 2 loaded
# cores (`turnrl train --env textcraft --steps 40 --set eval.every=10`, OMP_NUM_THREADS=1): warm-up 388 s, 737 s
# in all; held-out greedy success 0.00 at step 0 and 0.00 at steps 10-40 (sampled 0.00 -> 0.00; valid replies
# 0.50 -> 1.00). It does NOT learn yet: train success 0-11% per step, and the penalty drives the replies toward
# always-valid `get`s. A random valid-action policy scores 0.59 on the same 23 goals at turn cap 6.
TEXTCRAFT_DEMO = TrainConfig(
    env=EnvConfig(family="textcraft", options={"max_depth": 1, "list_inventory": False}),
    rollout=RolloutConfig(
        prompts_per_step=8,
        group_size=8,
        episode=EpisodeConfig(
            turn_cap=6,
            max_new_tokens=32,
            temperature=1.0,
            constrain_to_valid_actions=False,
            invalid_reply_penalty=0.05,
        ),
    ),
    algo=AlgoConfig(
        name="grpo",
        learner=LearnerConfig(lr=3e-4),
    ),
    # The warm-up draws its items from the far end of the 444-id train split, so it can hold at most 888
    # episodes (twice over the split); a longer turn cap and more epochs give it more replies instead.
    model=ModelConfig(default=DefaultModelConfig(warmup=WarmupConfig(episodes=888, turn_cap=8, epochs=3))),
    eval=EvalConfig(tasks=23, turn_cap=6, temperature=0.0, every=20),
    steps=80,
)

DEMOS = {"babyai": BABYAI_DEMO, "textcraft": TEXTCRAFT_DEMO}


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
        env_cfg = msgspec.structs.replace(env_cfg, options={**env_cfg.options, "level": level})
    rollout = base.rollout
    if model is not None:
        # a real language model writes free text; constraints are a crutch for the tiny default
        episode = msgspec.structs.replace(rollout.episode, constrain_to_valid_actions=False, max_new_tokens=256)
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
