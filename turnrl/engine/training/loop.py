"""The training loop: roll out, train, publish the weights, record; the parts live in their rooms.

Invariants:
- held-out (test split) tasks are only ever evaluated, never trained on;
- each step trains on the trajectories of exactly that step's tasks; they come through the ``TrajectoryBuffer``, so
  every token was sampled at most ``rollout.staleness`` (eta) weight versions before the weights it trains (eta = 0,
  the default: on-policy, and the next step's rollout starts only after this step is complete); the learner runs
  off the event loop; a generator with weights of its own keeps generating while it updates and takes the new
  weights between two decode steps, one that reads the learner's model is paused for the update; every token
  carries the version that sampled it;
- every finished step is on disk (``metrics.jsonl``, its trajectories) before the next one starts; the run ends with
  a checkpoint, ``summary.json`` and the success-curve plot;
- a resumed run (``resume=True``) continues from the run directory's latest checkpoint exactly where it stopped
  (see ``setup``); the steps after that checkpoint are redone (exactly so with eta = 0; with eta > 0 the rollouts
  already started for later steps are redone).
"""

from __future__ import annotations

import asyncio
import time

from turnrl.config import TrainConfig
from turnrl.engine.generation.pausable import PausableGenerator
from turnrl.engine.records.checkpoint import latest_checkpoint
from turnrl.engine.records.metrics import plot_success_curve, read_metrics
from turnrl.engine.records.reporter import Reporter
from turnrl.engine.records.step_row import batch_metrics, generation_metrics, throughput_metrics
from turnrl.engine.records.summary import write_summary
from turnrl.engine.records.trajectory_log import log_trajectories
from turnrl.engine.rollout.buffer import TrajectoryBuffer
from turnrl.engine.training.producer import RolloutProducer
from turnrl.engine.training.setup import TrainingRun, check_env, open_training_run
from turnrl.errors import ERROR_REASONS
from turnrl.models.tiny import parameter_count


class Trainer:
    def __init__(self, config: TrainConfig, reporter: Reporter | None = None, resume: bool = False, make_learner=None):
        """``make_learner(model, tokenizer)``: another learner than the default (see ``setup``)."""
        self.config = config
        self.make_learner = make_learner
        self.resume_from = latest_checkpoint(config.out) if resume else None
        if resume and self.resume_from is None:
            raise ValueError(f"nothing to resume: {config.out!r} has no checkpoint")
        self.reporter = reporter or Reporter()
        self.level = check_env(config)  # bad env options fail here, before any work starts

    def run(self) -> dict:
        return asyncio.run(self._run())

    async def _run(self) -> dict:
        run = await open_training_run(self.config, self.resume_from, self.reporter, self.make_learner)
        try:
            return await self._train(run)
        finally:  # also on failure: a started generation service is stopped
            await run.close()

    async def _train(self, run: TrainingRun) -> dict:
        cfg, generator = self.config, run.generator
        if not run.evals:
            run.evals.append(await run.heldout.row(0, full=True))
        rl_start = time.perf_counter()
        self.reporter.phase(f"RL ({cfg.algo.name})", cfg.steps)
        buffer = TrajectoryBuffer(cfg.rollout.staleness, version=generator.weight_version)
        in_place = generator.reads_weights_of(run.model)  # then updates wait for a pause; else generation goes on
        serving = PausableGenerator(generator)
        producer = RolloutProducer(run, serving, buffer)
        producer.start(run.first_step, cfg.steps)
        for step in range(run.first_step, cfg.steps + 1):
            rollout = await producer.next_batch(step)
            run.schedule.observe(step, rollout.trajectories)
            trained_version, update_start = generator.weight_version, time.perf_counter()
            if in_place:
                await serving.pause()
            await generator.yield_accelerator()  # colocated servers free the GPUs; push_weights takes them back
            trainable = self._trainable(rollout.trajectories)  # the learner works off the event loop:
            stats = await asyncio.to_thread(run.learner.update, trainable) if trainable else {}  # episodes go on
            await generator.push_weights(run.model, run.tokenizer, run.staging_dir)
            if in_place:
                serving.resume()
            update_end = time.perf_counter()

            row = batch_metrics(step, rollout.trajectories) | {f"learner/{k}": v for k, v in stats.items()}
            row |= throughput_metrics(rollout.trajectories, rollout.seconds, trained_version)
            row |= generation_metrics(
                rollout.before, rollout.after, rollout.seconds, sum(len(t.turns) for t in rollout.trajectories)
            )
            row |= {
                "time/rollout_s": rollout.seconds,
                "time/update_s": update_end - update_start,
                "time/elapsed_s": update_end - run.seconds["start"],
                "weight_version": generator.weight_version,
                "turn_cap": rollout.turn_cap,
                "rollout/constrained": float(cfg.rollout.constrained_at(step)),
                "curriculum_stage": run.schedule.stage_for(step),
            }
            row |= {"buffer/staleness_bound": buffer.eta, "buffer/stale_dropped": buffer.stale_dropped}
            if cfg.eval.every and step % cfg.eval.every == 0 and step != cfg.steps:
                run.evals.append(await run.heldout.row(step))
                row["eval/success_rate"] = run.evals[-1]["success_rate"]
            run.metrics.write(row)
            log_trajectories(run.run_dir, step, rollout.trajectories, run.tokenizer)  # text, for `turnrl view`
            self.reporter.advance(
                step, reward=row["train/reward_mean"], success=row["train/success_rate"], turns=row["train/turns_mean"]
            )
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                run.checkpoint(step)
            await buffer.advance()  # after this step's eval and checkpoint: with eta = 0 nothing overlaps them
        await producer.finish()
        return await self._finish(run, rl_seconds=time.perf_counter() - rl_start)

    def _trainable(self, trajectories):
        if not self.config.algo.drop_error_trajectories:
            return trajectories
        return [t for t in trajectories if t.end_reason not in ERROR_REASONS]

    async def _finish(self, run: TrainingRun, rl_seconds: float) -> dict:
        cfg = self.config
        if cfg.steps > 0:  # a resumed, finished run evaluates its last step again
            run.evals = [e for e in run.evals if e["step"] != cfg.steps] + [await run.heldout.row(cfg.steps, True)]
        checkpoint = run.checkpoint(cfg.steps)
        plot = plot_success_curve(
            read_metrics(run.run_dir / "metrics.jsonl"),
            run.evals,
            run.run_dir / "success_curve.png",
            f"{cfg.env.family} {cfg.env.options.get('level', '')} - {cfg.algo.name}",
        )
        seconds = {
            "warmup": run.seconds["warmup"],
            "rl": rl_seconds,
            "wall": time.perf_counter() - run.seconds["start"],
        }
        return write_summary(
            run.run_dir,
            cfg,
            level=self.level,
            parameters=parameter_count(run.model),
            evals=run.evals,
            caps=run.schedule.caps,
            seconds=seconds,
            warmup_losses=run.warmup_losses,
            checkpoint=checkpoint,
            plot=plot,
        )
