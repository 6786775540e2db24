"""The learner: turns a batch of trajectories and their advantages into optimizer steps.

Invariant: only policy tokens carry loss; each batch is split into
``minibatches`` optimizer steps (times ``epochs``), each accumulated over
micro-batches whose losses add up to exactly the mini-batch loss; the
"old" log-probs are the ones sampled at generation time (token in, token out),
so the importance ratio also corrects for any staleness of the generator.
"""

from __future__ import annotations

import copy
import math
import random

import msgspec
import torch

from turnrl.algorithms.kl import KL_ESTIMATORS, kl_estimate
from turnrl.algorithms.policy_loss import aggregate
from turnrl.algorithms.registry import get_policy_loss
from turnrl.engine.batch import micro_batches, pack, policy_logprobs
from turnrl.protocol import Trajectory


class LearnerConfig(msgspec.Struct, frozen=True, kw_only=True):
    lr: float = 3e-4
    lr_warmup_steps: int = 10  # optimizer steps of linear warm-up (Adam's first steps are large)
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    minibatches: int = 2
    epochs: int = 1
    micro_batch_tokens: int = 16384
    loss: str = "clipped"
    clip_low: float = 0.2
    clip_high: float = 0.28
    dual_clip: float | None = None
    aggregation: str = "token-mean"
    entropy_coef: float = 0.0
    kl_coef: float = 0.0  # KL to the frozen initial policy, added to the loss
    kl_estimator: str = "k3"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.minibatches < 1 or self.epochs < 1:
            raise ValueError("minibatches and epochs must be >= 1")
        if self.clip_low < 0 or self.clip_high < 0:
            raise ValueError(f"clip ranges must be >= 0, got low={self.clip_low}, high={self.clip_high}")
        if self.lr_warmup_steps < 0:
            raise ValueError(f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if self.micro_batch_tokens < 1:
            raise ValueError("micro_batch_tokens must be >= 1")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"unknown kl_estimator {self.kl_estimator!r}; choose from: {', '.join(KL_ESTIMATORS)}")


class Learner:
    def __init__(self, model, config: LearnerConfig, pad_token_id: int, seed: int = 0):
        self.model = model
        self.config = config
        self.pad_token_id = pad_token_id
        self.loss_fn = get_policy_loss(config.loss)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        warm = config.lr_warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warm) if warm else 1.0
        )
        self.rng = random.Random(seed)
        self.updates = 0
        self.reference = None
        if config.kl_coef > 0:
            self.reference = copy.deepcopy(model).eval()
            for param in self.reference.parameters():
                param.requires_grad_(False)

    def update(self, trajectories: list[Trajectory], advantages: list[torch.Tensor]) -> dict[str, float]:
        usable = [i for i, t in enumerate(trajectories) if t.num_policy_tokens > 0]
        if not usable:
            return {"loss": 0.0, "grad_norm": 0.0, "optimizer_steps": 0}
        cfg = self.config
        self.model.train()
        stats: dict[str, list[float]] = {}
        for _ in range(cfg.epochs):
            order = usable[:]
            self.rng.shuffle(order)
            n_mb = min(cfg.minibatches, len(order))
            for mb in range(n_mb):
                chosen = order[mb::n_mb]
                step_stats = self._step([trajectories[i] for i in chosen], [advantages[i] for i in chosen])
                for key, value in step_stats.items():
                    stats.setdefault(key, []).append(value)
        self.model.eval()
        self.updates += 1
        out = {k: sum(v) / len(v) for k, v in stats.items()}
        out["optimizer_steps"] = len(stats.get("loss", []))
        return out

    def _step(self, trajs: list[Trajectory], advs: list[torch.Tensor]) -> dict[str, float]:
        cfg = self.config
        total_tokens = sum(max(t.num_policy_tokens, 0) for t in trajs)
        denominator = total_tokens if cfg.aggregation == "token-mean" else len(trajs)
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "entropy": 0.0, "clip_frac": 0.0, "approx_kl": 0.0, "ref_kl": 0.0}
        for group in micro_batches([len(t.token_ids) for t in trajs], cfg.micro_batch_tokens):
            batch = pack([trajs[i] for i in group], [advs[i] for i in group], self.pad_token_id)
            logp, entropy = policy_logprobs(self.model, batch, cfg.temperature)
            loss, stats = self.loss_fn(
                logp, batch.old_logprobs, batch.advantages, batch.loss_mask,
                clip_low=cfg.clip_low, clip_high=cfg.clip_high, dual_clip=cfg.dual_clip,
                aggregation=cfg.aggregation, denominator=denominator,
            )
            mask = batch.loss_mask.float()
            if self.reference is not None:
                with torch.no_grad():
                    ref_logp, _ = policy_logprobs(self.reference, batch, cfg.temperature)
                kl = kl_estimate(logp, ref_logp, cfg.kl_estimator) * mask
                loss = loss + cfg.kl_coef * aggregate(kl, batch.loss_mask, cfg.aggregation, denominator)
                sums["ref_kl"] += float(kl.detach().sum()) / max(total_tokens, 1)
            if cfg.entropy_coef:
                loss = loss - cfg.entropy_coef * (entropy * mask).sum() / max(total_tokens, 1)
            loss.backward()
            share = batch.num_tokens / max(total_tokens, 1)
            sums["loss"] += float(loss.detach())
            sums["entropy"] += float((entropy.detach() * mask).sum()) / max(total_tokens, 1)
            sums["clip_frac"] += stats["clip_frac"] * share
            sums["approx_kl"] += stats["approx_kl"] * share
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if torch.isfinite(grad_norm):
            self.optimizer.step()
            self.scheduler.step()
        sums["grad_norm"] = float(grad_norm)
        return sums
