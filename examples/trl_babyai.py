"""TRL's GRPO trainer on BabyAI GoToLocal, with turnrl as its multi-turn rollout backend, on the CPU.

The policy is turnrl's embedded default (a tiny Qwen2-shaped model and a tokenizer fitted to BabyAI's text, given
a format warm-up on random valid actions: what ``turnrl train`` starts from); TRL's ``GRPOTrainer`` does the
learning; ``turnrl.integrations.trl.TurnrlRollout`` plays the episodes (prompt and every turn token in / token
out, observation tokens masked out of TRL's loss, the env's reward, groups from turnrl's ``TaskSampler``).
Held-out success (greedy, free text) is measured before and after on the same test tasks.

    pip install 'turnrl[trl]'
    python examples/trl_babyai.py --steps 60 --out runs/trl-babyai
    python examples/trl_babyai.py --base-model runs/<run>/base_model    # start from a saved base model

Prints one line per TRL step and, at the end, ``held-out success A -> B``; writes ``summary.json`` in --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch

from turnrl.config.episode import EpisodeConfig
from turnrl.config.model import DefaultModelConfig, WarmupConfig
from turnrl.engine.eval.heldout import evaluate
from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.rollout.run import EnvPool
from turnrl.engine.rollout.sampler import heldout_tasks
from turnrl.engine.training.default_policy import build_default_policy
from turnrl.envs import get_env_spec, make_env
from turnrl.integrations.trl import TurnrlRollout, env_reward
from turnrl.models.chat import ChatFormat
from turnrl.models.loading import load_policy, save_policy
from turnrl.recipes import BABYAI_DEMO

ENV, OPTIONS = "babyai", dict(BABYAI_DEMO.env.options)  # the main job's layout: its base_model/ fits


def base_policy(args):
    if args.base_model:
        return load_policy(args.base_model)
    spec = get_env_spec(ENV)
    train = spec.splits.train
    config = DefaultModelConfig(warmup=WarmupConfig(episodes=args.warmup_episodes))
    items = [train[len(train) - 1 - i] for i in range(args.warmup_episodes)]  # the far end, as the main job does
    model, tokenizer, _ = build_default_policy(make_env(ENV, **OPTIONS), items, config, seed=args.seed)
    save_policy(model, tokenizer, Path(args.out) / "base_model")
    return model, tokenizer


def heldout_success(model, tokenizer, tasks, turn_cap: int) -> float:
    async def run() -> float:
        generator = LocalGenerator(model, tokenizer.pad_token_id, seed=0)
        pool = EnvPool(lambda: make_env(ENV, **OPTIONS))
        config = EpisodeConfig(turn_cap=turn_cap, max_new_tokens=16, temperature=0.0)
        try:
            report, _ = await evaluate(tasks, pool, generator, ChatFormat(tokenizer), config)
        finally:
            await generator.close()
            await pool.close()
        return report.success_rate

    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return asyncio.run(run())
    finally:
        model.train(training)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="TRL optimizer steps")
    parser.add_argument("--prompts", type=int, default=8, help="tasks per rollout")
    parser.add_argument("--group-size", type=int, default=8, help="episodes per task (GRPO's group)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--turn-cap", type=int, default=6)
    parser.add_argument("--eval-tasks", type=int, default=200)
    parser.add_argument(
        "--eval-every", type=int, default=0, help="also evaluate every N TRL steps (0: only at the end)"
    )
    parser.add_argument("--warmup-episodes", type=int, default=1600)
    parser.add_argument("--base-model", default=None, help="a saved base model directory (skips the warm-up)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/trl-babyai")
    args = parser.parse_args()
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    model, tokenizer = base_policy(args)
    tasks = heldout_tasks(ENV, get_env_spec(ENV).splits.test, args.eval_tasks)
    before = heldout_success(model, tokenizer, tasks, args.turn_cap)
    print(f"held-out success before: {before:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)

    rollout = TurnrlRollout(
        model=model,
        tokenizer=tokenizer,
        env=ENV,
        env_options=OPTIONS,
        group_size=args.group_size,
        episode=EpisodeConfig(turn_cap=args.turn_cap, max_new_tokens=16, temperature=1.0),
        seed=args.seed,
    )
    batch = args.prompts * args.group_size
    config = rollout.grpo_config(
        output_dir=str(Path(args.out) / "trl"),
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        per_device_train_batch_size=batch // 2,  # two optimizer steps per rollout, as turnrl's CPU recipe
        steps_per_generation=2,
        loss_type="grpo",
        epsilon=0.2,
        epsilon_high=0.28,
        max_grad_norm=1.0,
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=args.seed,
    )
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=env_reward,
        args=config,
        train_dataset=rollout.dataset(),
        rollout_func=rollout,
    )
    curve = [{"step": 0, "train_seconds": 0.0, "success": before}]
    clock = {"train_start": time.perf_counter(), "eval_s": 0.0}

    class HeldOut(TrainerCallback):
        """Held-out success every --eval-every steps; its time is not counted as training time."""

        def on_step_end(self, _args, state, control, **kwargs):
            if args.eval_every and state.global_step % args.eval_every == 0 and state.global_step < args.steps:
                t = time.perf_counter()
                trained = t - clock["train_start"] - clock["eval_s"]
                success = heldout_success(model, tokenizer, tasks, args.turn_cap)
                clock["eval_s"] += time.perf_counter() - t
                curve.append({"step": state.global_step, "train_seconds": trained, "success": success})
                print(
                    f"held-out success at step {state.global_step}: {success:.3f} ({trained:.0f} s of training)",
                    flush=True,
                )

    trainer.add_callback(HeldOut())
    trainer.train()
    train_s = time.perf_counter() - clock["train_start"] - clock["eval_s"]
    rollout.close()
    after = heldout_success(model, tokenizer, tasks, args.turn_cap)
    curve.append({"step": args.steps, "train_seconds": train_s, "success": after})
    wall = time.perf_counter() - start
    print(f"held-out success {before:.3f} -> {after:.3f} ({args.steps} TRL steps in {train_s:.0f} s; {wall:.0f} s all)")
    summary = {
        "before": before,
        "after": after,
        "steps": args.steps,
        "train_seconds": train_s,
        "wall_seconds": wall,
        "eval_tasks": args.eval_tasks,
        "heldout": curve,
        "rewards": [row["reward"] for row in trainer.state.log_history if "reward" in row],
    }
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
