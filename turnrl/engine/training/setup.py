"""Everything a training run holds, built (or restored from its latest checkpoint) before the first step.

Invariants:
- bad env options fail in ``check_env`` before any model is built;
- a fresh run writes ``config.json`` and, for the embedded default, ``base_model/`` (the warmed-up policy RL starts
  from); a resumed run restores weights, optimizer, critic/reference, RNG (torch's, Python's, numpy's and the
  generator's), weight version, turn-cap schedule stage and the held-out evaluations so far, and drops the
  metrics rows of the steps it will redo; a checkpoint is read without pickle, and one holding a pickle-format
  file is refused (``CheckpointError``) before any of its files is read;
- ``checkpoint`` saves exactly what a resume restores; ``close`` releases the generator (stopping a service process
  it started) and the envs, also after a failure.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import torch

from turnrl.config import TrainConfig, to_dict
from turnrl.config.model import EMBEDDED_BASE_FILE
from turnrl.engine.eval.heldout import HeldOutEvaluator
from turnrl.engine.generation.base import Generator
from turnrl.engine.generation.serving import open_generator, staging_dir
from turnrl.engine.records.checkpoint import (
    check_no_pickle,
    load_learner_state,
    load_rng_states,
    load_trainer_state,
    restore_rng_states,
    save_checkpoint,
)
from turnrl.engine.records.loggers import MetricsLogger
from turnrl.engine.records.metrics import drop_rows_after
from turnrl.engine.records.reporter import Reporter
from turnrl.engine.rollout.curriculum import TurnCapSchedule
from turnrl.engine.rollout.run import EnvPool
from turnrl.engine.rollout.sampler import TaskSampler, heldout_tasks
from turnrl.engine.training.default_policy import build_default_policy
from turnrl.engine.training.learner import Learner
from turnrl.engine.training.warmup import warmup_items
from turnrl.envs import get_env_spec
from turnrl.models import ChatFormat, load_policy, save_policy
from turnrl.models.loading import resolve_device


@dataclass
class TrainingRun:
    config: TrainConfig
    run_dir: Path
    model: torch.nn.Module
    tokenizer: object
    chat: ChatFormat
    generator: Generator
    learner: Learner
    schedule: TurnCapSchedule
    pool: EnvPool
    sampler: TaskSampler
    heldout: HeldOutEvaluator
    metrics: MetricsLogger
    first_step: int = 1
    evals: list[dict] = field(default_factory=list)  # held-out rows so far (restored on resume)
    warmup_losses: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    env_workers: object | None = None  # the EnvWorkerPool the envs live in (None: in this process)

    @property
    def staging_dir(self) -> Path:
        return staging_dir(self.run_dir)

    def checkpoint(self, step: int) -> Path:
        state = {
            "algo": self.config.algo.name,
            "curriculum": self.schedule.state_dict(),
            "weight_version": self.generator.weight_version,
            "evals": self.evals,
        }
        rng = self.generator.rng_state()
        return save_checkpoint(
            self.run_dir,
            step,
            self.model,
            self.tokenizer,
            self.learner,
            state,
            rng_states={} if rng is None else {"generator": rng},
        )

    async def close(self) -> None:
        self.metrics.close()
        await self.generator.close()
        await self.pool.close()
        if self.env_workers is not None:
            await self.env_workers.close()


def check_env(config: TrainConfig):
    """Build one env with the run's options (bad options fail here) and return its level, if it has one."""
    env = get_env_spec(config.env.family).factory(**config.env.options)
    level = getattr(env, "level", None)
    close_env_now(env)
    return level


def learner_arguments(cfg: TrainConfig, tokenizer) -> tuple[tuple, dict]:
    """The learner's arguments after the model (the same on every rank of a sharded learner)."""
    args = (cfg.algo.learner, tokenizer.pad_token_id)
    kwargs = dict(
        seed=cfg.seed,
        estimator=cfg.algo.name,
        advantage=cfg.algo.advantage,
        critic=cfg.algo.critic,
        per_turn_rewards=cfg.rollout.episode.reward_mode == "sum",
        temperature=cfg.rollout.episode.temperature or 1.0,  # greedy tokens carry T = 1 log-probs
    )
    return args, kwargs


async def open_training_run(
    config: TrainConfig, resume_from: Path | None, reporter: Reporter, make_learner=None
) -> TrainingRun:
    """``make_learner(model, tokenizer)``: another learner than ``Learner`` on the run's model (e.g. a sharded
    one, whose ``update`` leaves the new weights in ``model``)."""
    start = time.perf_counter()
    cfg, run_dir = config, Path(config.out)
    spec = get_env_spec(cfg.env.family)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True))
    torch.manual_seed(cfg.seed)
    if resume_from is not None:
        check_no_pickle(resume_from)  # before any file of it is read
    model, tokenizer, warmup_losses = await _policy(cfg, resume_from, reporter)
    resumed = load_trainer_state(resume_from) if resume_from is not None else None
    generator = await open_generator(
        cfg.rollout.generator,
        model,
        tokenizer,
        run_dir,
        seed=cfg.seed,
        max_batch=cfg.rollout.max_batch,
        kv_cache_tokens=cfg.rollout.kv_cache_tokens,
        weight_version=resumed["weight_version"] if resumed else 0,
        staleness=cfg.rollout.staleness,
    )
    chat = ChatFormat(tokenizer)
    env_workers = None
    if cfg.env.workers is not None:
        from turnrl.envs.zmq.pool import EnvWorkerPool

        env_workers = await EnvWorkerPool(cfg.env.workers).start()
        pool = EnvPool(lambda: env_workers.env(cfg.env.family, **cfg.env.options))
    else:
        pool = EnvPool(lambda: spec.factory(**cfg.env.options))
    args, kwargs = learner_arguments(cfg, tokenizer)
    eval_config = msgspec.structs.replace(
        cfg.rollout.episode, turn_cap=cfg.eval.turn_cap, temperature=cfg.eval.temperature
    )
    run = TrainingRun(
        config=cfg,
        run_dir=run_dir,
        model=model,
        tokenizer=tokenizer,
        chat=chat,
        generator=generator,
        learner=make_learner(model, tokenizer) if make_learner else Learner(model, *args, **kwargs),
        schedule=TurnCapSchedule(cfg.curriculum, cfg.env.family, cfg.rollout.episode.turn_cap),
        pool=pool,
        env_workers=env_workers,
        sampler=TaskSampler(
            cfg.env.family, spec.splits.train, cfg.rollout.prompts_per_step, cfg.rollout.group_size, cfg.seed
        ),
        heldout=HeldOutEvaluator(
            heldout_tasks(cfg.env.family, spec.splits.test, cfg.eval.tasks),
            pool,
            generator,
            chat,
            eval_config,
            reporter,
        ),
        metrics=MetricsLogger(run_dir, cfg.logging, to_dict(cfg)),
        warmup_losses=warmup_losses,
        seconds={"start": start, "warmup": time.perf_counter() - start},
    )
    if resumed is not None:
        run.learner.load_state_dict(load_learner_state(resume_from))
        run.schedule.load_state_dict(resumed["curriculum"])
        rng = load_rng_states(resume_from)
        restore_rng_states(rng)
        generator.set_rng_state(rng.get("generator"))
        run.first_step, run.evals = resumed["step"] + 1, resumed["evals"]
        drop_rows_after(run_dir / "metrics.jsonl", resumed["step"])
    return run


async def _policy(cfg: TrainConfig, resume_from: Path | None, reporter: Reporter):
    """(model, tokenizer, warm-up losses): from the checkpoint, from ``model.path``, or the embedded default."""
    device = resolve_device(cfg.model.device)
    if resume_from is not None or cfg.model.path is not None:
        model, tokenizer = load_policy(resume_from or cfg.model.path, device=device)
        return model, tokenizer, []
    spec = get_env_spec(cfg.env.family)
    default = cfg.model.default
    reporter.phase("format warm-up (random valid actions)", None)
    env = spec.factory(**cfg.env.options)
    train = spec.splits.train
    items = warmup_items(train, default.warmup.episodes)
    model, tokenizer, losses = build_default_policy(
        env, items, default, seed=cfg.seed, on_step=lambda s, total, loss: reporter.advance(s, total=total, loss=loss)
    )
    await env.close()
    saved = save_policy(model, tokenizer, Path(cfg.out) / "base_model")
    marker = {"family": cfg.env.family, "options": cfg.env.options, "default": to_dict(default)}
    (saved / EMBEDDED_BASE_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True))
    return model.to(device), tokenizer, losses


def close_env_now(env) -> None:
    if hasattr(env, "close_sync"):
        env.close_sync()
    else:
        asyncio.run(env.close())
