"""One training step's metrics row: the batch, the learner, the rollout's speed, staleness and prefix reuse.

Invariants: every figure is computed from what the step actually trained on and what its rollout did; a batch the
staleness bound emptied gives zeros, not an error; keys are grouped by prefix (``train/``, ``end/``,
``learner/``, ``throughput/``, ``staleness/``, ``generation/``, ``time/``).
"""

from __future__ import annotations

import statistics
from collections import Counter

from turnrl.engine.generation.base import GeneratorStats
from turnrl.protocol import Trajectory


def _mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else 0.0


def batch_metrics(step: int, trajectories: list[Trajectory]) -> dict:
    """Training-batch figures."""
    turns = [t for traj in trajectories for t in traj.turns]
    reasons = Counter(t.end_reason for t in trajectories)
    return {
        "step": step,
        "train/episodes": len(trajectories),
        "train/success_rate": _mean(t.success for t in trajectories),
        "train/reward_mean": _mean(t.reward for t in trajectories),
        "train/turns_mean": _mean(len(t.turns) for t in trajectories),
        "train/valid_action_rate": _mean(t.valid for t in turns),
        "train/tokens": sum(len(t.token_ids) for t in trajectories),
        "train/policy_tokens": sum(t.num_policy_tokens for t in trajectories),
        **{f"end/{reason}": count for reason, count in sorted(reasons.items())},
    }


def throughput_metrics(trajectories: list[Trajectory], rollout_seconds: float, learner_version: int) -> dict:
    """Env steps and generated tokens per second of the rollout, and how many versions the trained tokens lag."""
    seconds = max(rollout_seconds, 1e-9)
    lags = [learner_version - v for t in trajectories for v, m in zip(t.versions, t.loss_mask, strict=True) if m]
    return {
        "throughput/env_steps_per_s": sum(len(t.turns) for t in trajectories) / seconds,
        "throughput/tokens_per_s": sum(t.num_policy_tokens for t in trajectories) / seconds,
        "staleness/mean": _mean(lags),
        "staleness/max": float(max(lags, default=0)),
    }


def generation_metrics(before: GeneratorStats, after: GeneratorStats, rollout_seconds: float, turns: int) -> dict:
    """What the generator did during the rollout: busy share, prompt tokens computed and reused per turn, and the
    share of turns that found their session's cache. Overlapping rollouts (eta > 0) share these figures."""
    row = {}
    busy = after.busy_seconds - before.busy_seconds
    if busy > 0:
        row["throughput/generator_busy_fraction"] = busy / max(rollout_seconds, 1e-9)
    lookups = after.prefix_lookups - before.prefix_lookups
    if lookups:
        row["generation/prefix_hit_rate"] = (after.prefix_hits - before.prefix_hits) / lookups
    if turns and (after.prefill_tokens > before.prefill_tokens or after.reused_tokens > before.reused_tokens):
        row["generation/prefill_tokens_per_turn"] = (after.prefill_tokens - before.prefill_tokens) / turns
        row["generation/reused_tokens_per_turn"] = (after.reused_tokens - before.reused_tokens) / turns
        row["generation/shared_prefill_tokens"] = after.shared_prefill_tokens - before.shared_prefill_tokens
    return row
