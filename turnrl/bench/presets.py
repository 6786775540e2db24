"""The fixed workloads of the published rollout figures, as presets of ``turnrl bench rollout --workload``.

- ``agentic``: 2048 episodes through 256 slots, 1..8 turns, tokens per turn lognormal (median 64, p99 512, cap
  512), env latency lognormal (median 20 ms, p99 2 s, cap 10 s), a latency-model generator (decode step 10 ms +
  0.04 ms x running, at most 256 running, continuous batching); time scale 0.25 (``--quick``: 512 episodes,
  0.05). Async and lock-step.
- ``agentic-overhead``: the same plan with zero-latency envs and a zero-cost generator (4096 episodes,
  ``--quick`` 1024): the engine's own CPU per env step. Async only.
- ``agentic-scale``: 4096 episodes all in flight at once (``--quick`` 1024), latencies at a fifth of the time
  scale: what thousands of live episodes cost. Async only.

Invariant: a preset is a pure function of (name, quick, time scale): the figures are comparable from run to run
(do not tune the workload); a finished mode that did not do the planned work (every episode done, the planned
steps and tokens) raises ``RuntimeError``.
"""

from __future__ import annotations

import msgspec

from turnrl.bench.latency_model import LatencyModelGenerator, SyntheticEnv, Workload, WorkloadConfig
from turnrl.bench.run import BenchPlan, EnvSource
from turnrl.config.episode import EpisodeConfig
from turnrl.engine.training.warmup import random_episodes
from turnrl.envs.babyai import BabyAIEnv
from turnrl.models.chat import ChatFormat
from turnrl.models.tokenizer import train_tokenizer
from turnrl.protocol import Task, Trajectory

PRESETS = ("agentic", "agentic-overhead", "agentic-scale")


def babyai_chat() -> ChatFormat:
    """A chat format for the synthetic workload's prompts (its token counts come from the plan, not from text)."""
    env = BabyAIEnv("GoToLocal")
    texts = [env.system_prompt]
    for episode in random_episodes(env, list(range(40)), 3, seed=0):
        texts += [*episode.observations, *episode.replies]
    return ChatFormat(train_tokenizer(texts, vocab_size=600))


def synthetic_episode_config(workload: Workload) -> EpisodeConfig:
    c = workload.config
    return EpisodeConfig(
        turn_cap=c.max_turns,
        max_new_tokens=c.tokens_cap,
        max_total_tokens=(c.tokens_cap + 64) * (c.max_turns + 1),
        env_timeout_s=2 * c.env_cap_s * c.time_scale + 1.0,
    )


def _planned_work(workload: Workload):
    def check(mode: str, trajectories: list[Trajectory]) -> None:
        steps = sum(len(t.turns) for t in trajectories)
        tokens = sum(t.num_policy_tokens for t in trajectories)
        bad = [t.end_reason for t in trajectories if t.end_reason != "done"]
        if bad or steps != workload.total_steps or tokens != workload.total_tokens:
            raise RuntimeError(
                f"{mode}: the run did not do the planned work ({len(bad)} not done: {bad[:3]}, "
                f"{steps}/{workload.total_steps} steps, {tokens}/{workload.total_tokens} tokens)"
            )

    return check


def preset_plan(
    name: str,
    *,
    quick: bool = False,
    time_scale: float | None = None,
    time_limit_s: float | None = None,
    chat: ChatFormat | None = None,
    repeats: int = 1,
) -> BenchPlan:
    if name not in PRESETS:
        raise ValueError(f"unknown --workload {name!r}; choose from: {', '.join(PRESETS)}")
    scale = time_scale if time_scale is not None else (0.05 if quick else 0.25)
    if not scale > 0:
        raise ValueError(f"--time-scale must be > 0, got {scale}")
    base = WorkloadConfig(time_scale=scale, episodes=512 if quick else 2048)
    zero = False
    modes: tuple[str, ...] = ("async", "lockstep")
    many = 1024 if quick else 4096
    if name == "agentic-overhead":
        base, zero, modes = msgspec.structs.replace(base, episodes=many), True, ("async",)
    elif name == "agentic-scale":
        base = msgspec.structs.replace(base, episodes=many, slots=many, time_scale=scale * 0.2)
        modes = ("async",)
    workload = Workload(base)

    async def generator():
        return LatencyModelGenerator(workload, zero_cost=zero)

    async def envs_factory():
        return lambda: SyntheticEnv(workload, zero_latency=zero)

    c = workload.config
    return BenchPlan(
        name=name,
        tasks=[Task(env="synthetic", item_id=i, group=i) for i in range(c.episodes)],
        envs=lambda: EnvSource(open=envs_factory),
        generator=generator,
        chat=chat or babyai_chat(),
        episode=synthetic_episode_config(workload),
        concurrency=c.slots,
        modes=modes,
        time_limit_s=time_limit_s,
        repeats=repeats,
        describe={
            "env": "synthetic" + (" (zero latency)" if zero else ""),
            "generator": "latency model" + (" (zero cost)" if zero else ""),
            "episodes": c.episodes,
            "concurrency": c.slots,
            "turn_cap": c.max_turns,
            "time_scale": c.time_scale,
            "ideal_s": workload.ideal_seconds(),
            "planned_env_steps": workload.total_steps,
            "planned_tokens": workload.total_tokens,
        },
        check=_planned_work(workload),
    )
