"""Held-out evaluation: success rate, reward and turns of the policy on fixed tasks.

Invariant: evaluation never trains and never touches training tasks; it reports
the share of episodes that ended in success, the mean final reward, the mean
number of turns and the share of valid actions, over exactly the given tasks.
"""

from __future__ import annotations

import statistics

import msgspec

from turnrl.engine.episode import EpisodeConfig
from turnrl.engine.generation import Generator
from turnrl.engine.rollout import EnvPool, run_episodes
from turnrl.models.chat import ChatFormat
from turnrl.protocol import Task, Trajectory


class EvalReport(msgspec.Struct, kw_only=True):
    tasks: int
    success_rate: float
    mean_reward: float
    mean_turns: float
    valid_action_rate: float
    turn_cap: int
    temperature: float


def summarize(trajectories: list[Trajectory], config: EpisodeConfig) -> EvalReport:
    turns = [t for traj in trajectories for t in traj.turns]
    return EvalReport(
        tasks=len(trajectories),
        success_rate=statistics.fmean(t.success for t in trajectories),
        mean_reward=statistics.fmean(t.reward for t in trajectories),
        mean_turns=statistics.fmean(len(t.turns) for t in trajectories),
        valid_action_rate=statistics.fmean(t.valid for t in turns) if turns else 0.0,
        turn_cap=config.turn_cap,
        temperature=config.temperature,
    )


async def evaluate(tasks: list[Task], pool: EnvPool, generator: Generator, chat: ChatFormat,
                   config: EpisodeConfig) -> tuple[EvalReport, list[Trajectory]]:
    trajectories = await run_episodes(tasks, pool, generator, chat, config)
    return summarize(trajectories, config), trajectories
