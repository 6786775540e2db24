"""``turnrl eval --split agentgym``: the AgentGym-RL paper's evaluation sets, every family, one table.

Invariants: each family is evaluated on its named split ``agentgym`` under ``paper.PAPER_OPTIONS`` with
``evaluate_at_k`` (so its Avg@k / Pass@k are exactly those of the episodes it records); with a model
directory every family uses that model, without one each family gets the embedded default policy built
from its own text (a short format warm-up of random valid actions, saved under ``workdir/<family>``); a
family that cannot run (no Java, no Chromium) becomes a row saying why, and the others still run.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec

from turnrl.config.eval import EvalAtKConfig
from turnrl.config.model import DefaultModelConfig, WarmupConfig
from turnrl.engine.eval.at_k import evaluate_at_k, plan_eval
from turnrl.engine.eval.paper import PAPER, PAPER_OPTIONS
from turnrl.engine.training.default_policy import build_default_policy
from turnrl.envs import get_env_spec
from turnrl.models.loading import save_policy


class _ListedSearch:
    """A search env that lists two replies for the warm-up's random player: search the question, or guess."""

    def __init__(self, env) -> None:
        self.env, self.system_prompt = env, env.system_prompt

    def reset_sync(self, item_id: int) -> str:
        return self.env.reset_sync(item_id)

    def step_sync(self, reply: str):
        return self.env.step_sync(reply)

    def format_reply(self, action: str) -> str:
        return self.env.format_reply(action)

    def valid_actions_sync(self) -> list[str]:
        return [f"<search>{self.env.question.text}</search>", "<answer>unknown</answer>"]


def embedded_model(family: str, out: Path, warmup_episodes: int, seed: int) -> Path:
    """Build the embedded default policy from ``family``'s own text and save it under ``out``."""
    spec = get_env_spec(family)
    env = spec.factory(**PAPER_OPTIONS.get(family, {}))
    try:
        train = spec.splits.train
        items = [train[len(train) - 1 - i] for i in range(warmup_episodes)]
        config = DefaultModelConfig(warmup=WarmupConfig(episodes=warmup_episodes))
        player = _ListedSearch(env) if family == "search" else env
        model, tokenizer, _ = build_default_policy(player, items, config, seed=seed)
    finally:
        close = getattr(env, "close_sync", None)
        close() if close else asyncio.run(env.close())
    return save_policy(model, tokenizer, out / family / "embedded_model")


def run_agentgym_eval(
    template: EvalAtKConfig,
    families: list[str],
    workdir: Path,
    warmup_episodes: int = 32,
    on_family: Callable[[str], None] | None = None,
) -> dict[str, dict | str]:
    """Each family's report on its ``agentgym`` split (``template`` gives k, n, tasks, decoding...; its
    ``model`` may be empty: the embedded default per family), or the reason it did not run."""
    reports: dict[str, dict | str] = {}
    for family in families:
        if family not in PAPER:
            raise ValueError(f"{family!r} has no AgentGym evaluation set; choose from: {', '.join(PAPER)}")
    for family in families:
        if on_family is not None:
            on_family(family)
        size = len(get_env_spec(family).splits.get("agentgym"))
        tasks = None if template.tasks is None else min(template.tasks, size)
        try:
            model = template.model or str(embedded_model(family, workdir, warmup_episodes, template.seed))
            cfg = msgspec.structs.replace(
                template, model=model, env=family, split="agentgym", tasks=tasks, options=PAPER_OPTIONS.get(family, {})
            )
            reports[family] = evaluate_at_k(plan_eval(cfg))
        except (OSError, RuntimeError, ValueError) as exc:  # e.g. no Java for SciWorld, no Chromium for web
            print(f"turnrl: {family} did not run: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            reports[family] = f"did not run: {type(exc).__name__}"
    return reports
