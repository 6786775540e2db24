"""``turnrl eval``: n sampled episodes per task of a split, reported as Avg@k / Pass@k per category.

Invariants: a run directory is evaluated through its latest checkpoint, on its own env
family and with the decoding its config trained with (valid-action constraints, reply
length) unless told otherwise; the report holds one record per episode (task, category, sample,
success, reward, turns, end reason) and its Avg@k / Pass@k are exactly
``pass_at_k.summarize_at_k`` of those records; evaluation never trains.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec

from turnrl.config.episode import EpisodeConfig
from turnrl.config.eval import EvalAtKConfig
from turnrl.engine.eval.pass_at_k import summarize_at_k
from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.records.checkpoint import latest_checkpoint
from turnrl.engine.rollout.run import EnvPool, run_episodes
from turnrl.envs import get_env_spec
from turnrl.models import ChatFormat, check_model_dir, load_policy
from turnrl.models.loading import resolve_device
from turnrl.protocol import Task


def resolve_model(path: str | Path) -> tuple[Path, dict | None]:
    """(model directory, the run's saved config or None) for a model or run directory."""
    path = Path(path)
    if (path / "latest").is_file() or ((path / "config.json").is_file() and not _is_model_dir(path)):
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise ValueError(f"--model {str(path)!r} is a run directory without a checkpoint")
        return checkpoint, _run_config(path)
    check_model_dir(path)
    return path, _run_config(path.parent) if path.name.startswith("checkpoint-") else None


def _is_model_dir(path: Path) -> bool:
    try:
        return "model_type" in json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False


def _run_config(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def episode_config(cfg: EvalAtKConfig, run: dict | None) -> EpisodeConfig:
    trained = msgspec.convert(run["rollout"]["episode"], EpisodeConfig) if run else EpisodeConfig()
    constrained = trained.constrain_to_valid_actions if run else False
    if cfg.decoding != "auto":
        constrained = cfg.decoding == "constrained"
    turn_cap = cfg.turn_cap or (run["eval"]["turn_cap"] if run else get_env_spec(cfg.env).default_turn_cap)
    max_new = trained.max_new_tokens if run else (24 if constrained else 256)
    episode = msgspec.structs.replace(
        trained,
        turn_cap=turn_cap,
        temperature=cfg.temperature,
        max_new_tokens=max_new,
        constrain_to_valid_actions=False,
    )
    return episode.constrained() if constrained else episode


def env_options(cfg: EvalAtKConfig, run: dict | None) -> dict:
    if cfg.options:
        return dict(cfg.options)
    if run and run["env"]["family"] == cfg.env:
        return dict(run["env"]["options"])
    return {}


def eval_tasks(cfg: EvalAtKConfig) -> list[Task]:
    items = get_env_spec(cfg.env).splits.get(cfg.split)
    count = len(items) if cfg.tasks is None else cfg.tasks
    if count > len(items):
        raise ValueError(f"--tasks {count} exceeds the {len(items)} items of the {cfg.split} split")
    return [
        Task(env=cfg.env, item_id=items[i], split=cfg.split, group=i) for i in range(count) for _ in range(cfg.samples)
    ]


class EvalPlan(msgspec.Struct, frozen=True, kw_only=True):
    """A validated evaluation: what runs, on which checkpoint, with which decoding."""

    config: EvalAtKConfig
    model_dir: str
    options: dict
    episode: EpisodeConfig
    tasks: list[Task]


def plan_eval(cfg: EvalAtKConfig) -> EvalPlan:
    """Check everything a run needs (model or run directory, env options, split size) without loading the model;
    bad values are ``ValueError``s."""
    model_dir, run = resolve_model(cfg.model)
    cfg = msgspec.structs.replace(cfg, env=cfg.env or (run["env"]["family"] if run else "babyai"))
    spec = get_env_spec(cfg.env)
    options = env_options(cfg, run)
    _close(spec.factory(**options))  # bad env options fail here
    return EvalPlan(
        config=cfg, model_dir=str(model_dir), options=options, episode=episode_config(cfg, run), tasks=eval_tasks(cfg)
    )


def evaluate_at_k(cfg: EvalAtKConfig | EvalPlan) -> dict:
    """Run the evaluation; returns the report (settings, ``table``, ``episodes``)."""
    plan = cfg if isinstance(cfg, EvalPlan) else plan_eval(cfg)
    cfg, spec, episode = plan.config, get_env_spec(plan.config.env), plan.episode
    model, tokenizer = load_policy(plan.model_dir, device=resolve_device(cfg.device))
    trajectories = asyncio.run(_rollouts(plan, spec, model, tokenizer))
    records = [
        {
            "split": t.task.split,
            "item_id": t.task.item_id,
            "category": spec.category(t.task.item_id, plan.options),
            "sample": i % cfg.samples,
            "success": t.success,
            "reward": t.reward,
            "turns": len(t.turns),
            "end_reason": t.end_reason,
        }
        for i, t in enumerate(trajectories)
    ]
    return {
        "model": plan.model_dir,
        "env": cfg.env,
        "env_options": plan.options,
        "split": cfg.split,
        "k": cfg.k,
        "n": cfg.samples,
        "tasks": len(plan.tasks) // cfg.samples,
        "turn_cap": episode.turn_cap,
        "temperature": episode.temperature,
        "seed": cfg.seed,
        "decoding": "valid-action constrained" if episode.constrain_to_valid_actions else "free text",
        "table": summarize_at_k(records, cfg.k),
        "episodes": records,
    }


def _close(env) -> None:
    if hasattr(env, "close_sync"):
        env.close_sync()
    else:
        asyncio.run(env.close())


async def _rollouts(plan: EvalPlan, spec, model, tokenizer):
    generator = LocalGenerator(model, tokenizer.pad_token_id, seed=plan.config.seed)
    pool = EnvPool(lambda: spec.factory(**plan.options))
    try:
        return await run_episodes(
            plan.tasks, pool, generator, ChatFormat(tokenizer), plan.episode, plan.config.concurrency
        )
    finally:
        await pool.close()
        await generator.close()
