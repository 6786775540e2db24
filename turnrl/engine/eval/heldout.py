"""Held-out evaluation: success rate, reward and turns of the policy on fixed tasks.

Invariant: evaluation never trains and never touches training tasks; it reports
the share of episodes that ended in success, the mean final reward, the mean
number of turns and the share of valid actions, over exactly the given tasks.
"""

from __future__ import annotations

import statistics

import msgspec

from turnrl.config.episode import EpisodeConfig
from turnrl.engine.generation.base import Generator
from turnrl.engine.rollout.run import EnvPool, run_episodes
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


async def evaluate(
    tasks: list[Task], pool: EnvPool, generator: Generator, chat: ChatFormat, config: EpisodeConfig
) -> tuple[EvalReport, list[Trajectory]]:
    trajectories = await run_episodes(tasks, pool, generator, chat, config)
    return summarize(trajectories, config), trajectories


class HeldOutEvaluator:
    """The held-out evaluations of a training run: a fixed task list, the run's eval decoding, one row each."""

    def __init__(
        self,
        tasks: list[Task],
        pool: EnvPool,
        generator: Generator,
        chat: ChatFormat,
        config: EpisodeConfig,
        reporter=None,
    ):
        self.tasks, self.pool, self.generator, self.chat, self.config = tasks, pool, generator, chat, config
        self.reporter = reporter

    async def row(self, step: int, full: bool = False) -> dict:
        """Success as configured; with ``full`` also sampled (T=1) and, under constraints, in free text."""
        if self.reporter is not None:
            self.reporter.phase(f"held-out eval @ step {step} ({len(self.tasks)} tasks)", None)
        report, _ = await evaluate(self.tasks, self.pool, self.generator, self.chat, self.config)
        row = {"step": step, **msgspec.to_builtins(report)}
        if full:
            sampled = await self._success(temperature=1.0)
            row["sampled_success_rate"] = sampled.success_rate
            row["sampled_valid_action_rate"] = sampled.valid_action_rate
            if self.config.constrain_to_valid_actions:
                free = await self._success(constrain_to_valid_actions=False)
                row["free_text_success_rate"] = free.success_rate
                row["free_text_valid_action_rate"] = free.valid_action_rate
        if self.reporter is not None:
            self.reporter.message(
                f"held-out @ step {step}: success {report.success_rate:.3f} (T={report.temperature:g})"
                + (f", {row['sampled_success_rate']:.3f} (T=1)" if full else "")
                + f", mean turns {report.mean_turns:.2f}"
            )
        return row

    async def _success(self, **changes) -> EvalReport:
        config = msgspec.structs.replace(self.config, **changes)
        report, _ = await evaluate(self.tasks, self.pool, self.generator, self.chat, config)
        return report
