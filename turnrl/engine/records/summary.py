"""``summary.json``: what a finished training run reached, in one flat record.

Invariant: written once at the end of a run (a resumed run rewrites it); ``initial_*`` come from the first
held-out evaluation (step 0) and ``final_*`` from the last, both on the same tasks.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_summary(
    run_dir: Path,
    cfg,
    *,
    level,
    parameters: int,
    evals: list[dict],
    caps: list[int],
    seconds: dict[str, float],
    warmup_losses: list[float],
    checkpoint: Path,
    plot: Path,
) -> dict:
    """``cfg`` is the run's ``TrainConfig``; ``seconds`` holds warmup, rl and wall seconds."""
    first, final = evals[0], evals[-1]
    summary = {
        "env": cfg.env.family,
        "level": level,
        "algo": cfg.algo.name,
        "model": cfg.model.path or f"embedded default ({cfg.model.default.preset})",
        "parameters": parameters,
        "steps": cfg.steps,
        "seed": cfg.seed,
        "heldout_tasks": cfg.eval.tasks,
        "eval_turn_cap": cfg.eval.turn_cap,
        "eval_temperature": cfg.eval.temperature,
        "initial_success": first["success_rate"],
        "final_success": final["success_rate"],
        "initial_success_sampled": first["sampled_success_rate"],
        "final_success_sampled": final["sampled_success_rate"],
        "decoding": "valid-action constrained" if cfg.rollout.episode.constrain_to_valid_actions else "free text",
        "initial_success_free_text": first.get("free_text_success_rate"),
        "final_success_free_text": final.get("free_text_success_rate"),
        "train_turn_caps": sorted(set(caps)),
        "curriculum": cfg.curriculum.kind,
        "episodes_trained": cfg.steps * cfg.rollout.prompts_per_step * cfg.rollout.group_size,
        "warmup_seconds": seconds["warmup"],
        "warmup_final_loss": warmup_losses[-1] if warmup_losses else None,
        "rl_seconds": seconds["rl"],
        "wall_seconds": seconds["wall"],
        "evals": evals,
        "checkpoint": str(checkpoint),
        "plot": str(plot),
    }
    (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary
