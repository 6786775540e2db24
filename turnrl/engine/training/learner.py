"""The learner: turns a batch of trajectories into optimizer steps of the policy (and critic).

Invariants:
- only policy tokens carry loss; the "old" log-probs are the ones sampled at
  generation time (token in, token out), so the importance ratio also corrects
  for any staleness of the generator; the one exception is a free-text reply
  trained beside the env's list (``Turn.listed``), whose renormalised old
  log-probs the sampler never computed: they are this policy's before the update;
- ``list_log_prob_coef`` adds to the loss, at every trained position of a reply sampled under or recorded
  beside a list, the log-prob of that list there (a loss term, not an advantage: it does not depend on the
  episode's reward), so a policy trained under constraints can stay on the list without them;
- advantages are computed once per batch, before any update, from the rewards,
  the critic's values and the reference's log-probs as the estimator needs them;
- each batch is split into ``minibatches`` optimizer steps (times ``epochs``), each
  accumulated over micro-batches whose losses add up to exactly the mini-batch
  loss.

The few places where a sharded learner differs (which micro-batches this process runs, how a forward is
called, how gradient norms and statistics are combined) are methods it overrides; the arithmetic stays here.
"""

from __future__ import annotations

import copy
import math
import random

import torch

from turnrl.algorithms.base import AdvantageInputs, advantage_inputs
from turnrl.algorithms.kl import kl_estimate
from turnrl.algorithms.policy_loss import aggregate
from turnrl.algorithms.registry import get_advantage_estimator, get_policy_loss
from turnrl.algorithms.value_loss import clipped_value_loss
from turnrl.config.algo import AdvantageParams, CriticConfig, LearnerConfig
from turnrl.engine.training.batch import TokenBatch, micro_batches, pack, policy_logprobs
from turnrl.models.value_head import Critic
from turnrl.protocol import Trajectory


def _warmup_schedule(optimizer, steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / steps) if steps else 1.0)


def _zero_variance_rows(inputs: AdvantageInputs) -> set[int]:
    drop = set()
    for members in inputs.groups:
        scores = inputs.scores[members]
        if len(members) > 1 and bool((scores == scores[0]).all()):
            drop.update(members)
    return drop


class Learner:
    def __init__(
        self,
        model,
        config: LearnerConfig,
        pad_token_id: int,
        seed: int = 0,
        *,
        estimator: str = "grpo",
        advantage: AdvantageParams | None = None,
        critic: CriticConfig | None = None,
        per_turn_rewards: bool = False,
        temperature: float = 1.0,
    ):
        """``temperature``: the one the trained tokens were sampled at (greedy counts as 1)."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 (the sampling temperature; greedy is 1), got {temperature}")
        self.model = model
        self.config = config
        self.temperature = temperature
        self.pad_token_id = pad_token_id
        self.per_turn_rewards = per_turn_rewards
        self.estimator = get_advantage_estimator(estimator)
        self.advantage = advantage or AdvantageParams()
        self.loss_fn = get_policy_loss(config.loss)
        self.critic = Critic(model, critic or CriticConfig()) if self.estimator.needs_values else None
        self._build_optimizers()
        needs_reference = config.kl_coef > 0 or (self.estimator.needs_reference and self.advantage.kl_reward_coef > 0)
        self.reference = None
        if needs_reference:
            self.reference = copy.deepcopy(model).eval()
            for param in self.reference.parameters():
                param.requires_grad_(False)
        self.rng = random.Random(seed)
        self.updates = 0

    def _build_optimizers(self) -> None:
        """The optimizers (and warm-up schedule) over the parameters the modules hold now."""
        config = self.config
        params = [{"params": list(self.model.parameters()), "lr": config.lr}]
        if self.critic is not None and self.critic.shared:
            params.append({"params": list(self.critic.head.parameters()), "lr": self.critic.config.lr})
        self.optimizer = torch.optim.AdamW(params, betas=config.betas, weight_decay=config.weight_decay)
        self.scheduler = _warmup_schedule(self.optimizer, config.lr_warmup_steps)
        self.critic_optimizer = None
        if self.critic is not None and not self.critic.shared:
            self.critic_optimizer = torch.optim.AdamW(
                self.critic.own_parameters(), lr=self.critic.config.lr, betas=config.betas
            )

    # ---- what a sharded learner overrides -------------------------------------------------
    def _row_groups(self, lengths: list[int]) -> list[list[int] | None]:
        """The micro-batches (row indices) this process runs; ``None`` is a pass whose loss counts zero."""
        return micro_batches(lengths, self.config.micro_batch_tokens)

    def _logprobs(self, which: str, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Log-probs and entropies of ``which`` ("policy" or "reference") on the batch's policy tokens, and the
        log-prob of each constrained or listed position's allowed set (``policy_logprobs``)."""
        model = self.model if which == "policy" else self.reference
        return policy_logprobs(model, batch, self.temperature, off_list_log_prob=self.config.off_list_log_prob)

    def _values(self, batch: TokenBatch) -> torch.Tensor:
        return self.critic.values(batch.input_ids, batch.attention_mask)

    def _combine_rows(self, out: torch.Tensor) -> torch.Tensor:
        """Rows computed here, combined with the rows other processes computed (none here)."""
        return out

    def _clip_grad_norm(self, params: list, max_norm: float) -> float:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def _combine_sums(self, sums: dict[str, float]) -> dict[str, float]:
        """Per-step statistics summed over every process's micro-batches (this one's only here)."""
        return sums

    # ---- state --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.rng.getstate(),
            "updates": self.updates,
        }
        if self.critic is not None:
            state["critic"] = self.critic.state_dict()
        if self.critic_optimizer is not None:
            state["critic_optimizer"] = self.critic_optimizer.state_dict()
        if self.reference is not None:
            state["reference"] = self.reference.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.setstate(state["rng"])
        self.updates = state["updates"]
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
        if self.critic_optimizer is not None:
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        if self.reference is not None:
            self.reference.load_state_dict(state["reference"])

    # ---- one batch ----------------------------------------------------------------------
    @torch.no_grad()
    def _per_row(self, fn, batch: TokenBatch) -> torch.Tensor:
        """Apply ``fn(sub_batch) -> [b, t]`` over micro-batches; reassemble [B, T]."""
        out = torch.zeros(batch.loss_mask.shape, dtype=torch.float32)
        lengths = batch.attention_mask.sum(-1).tolist()
        for rows in self._row_groups(lengths):
            if rows is None:
                fn(batch.select([0]))  # keeps this process in step with the others' forward passes
                continue
            sub = batch.select(rows)
            out[rows, : sub.input_ids.shape[1]] = fn(sub).float()
        return self._combine_rows(out)

    def prepare(self, trajectories: list[Trajectory]) -> tuple[TokenBatch, dict[str, float]]:
        """Pack the batch and attach advantages (and returns, old values, reference log-probs)."""
        batch = pack(trajectories, None, self.pad_token_id)
        listed = batch.constraint_recorded is not None and bool(batch.constraint_recorded.any())
        if listed:
            self._listed_old_logprobs(batch)
        inputs = advantage_inputs(trajectories, batch.loss_mask, batch.old_logprobs, self.per_turn_rewards)
        if self.reference is not None:
            batch.ref_logprobs = self._per_row(lambda sub: self._logprobs("reference", sub)[0], batch)
            inputs.ref_logprobs = batch.ref_logprobs
        if self.critic is not None:
            self.critic.eval()
            batch.old_values = self._per_row(self._values, batch)
            batch.old_values = batch.old_values * batch.loss_mask
            inputs.values = batch.old_values
        out = self.estimator.fn(inputs, self.advantage)
        batch.advantages = out.advantages * batch.loss_mask
        if self.config.invalid_reply_advantage is not None:
            _override_invalid_replies(batch, trajectories, self.config.invalid_reply_advantage)
        if listed:
            rows, cols = batch.constraint_index[batch.constraint_set_target].unbind(1)
            batch.advantages[rows, cols] = self.config.off_list_advantage
        off_policy = self._correct_off_policy(batch) if self.config.off_policy != "none" else {}
        batch.returns = out.returns
        stats = {
            "adv_mean": _masked_mean(batch.advantages, batch.loss_mask),
            "adv_abs_mean": _masked_mean(batch.advantages.abs(), batch.loss_mask),
        }
        stats.update(off_policy)
        if self.config.filter_zero_variance_groups:
            dropped = _zero_variance_rows(inputs)
            batch.loss_mask[list(dropped)] = False
            stats["filtered_trajectories"] = float(len(dropped))
        return batch, stats

    def _listed_old_logprobs(self, batch: TokenBatch) -> None:
        """A free-text reply was sampled with full-vocabulary log-probs; where the learner renormalises it over the
        env's list (or takes the list's mass), its old log-prob is this policy's before the update, the same as the
        sampler's when no update came between (staleness 0)."""
        self.model.eval()
        now = self._per_row(lambda sub: self._logprobs("policy", sub)[0], batch)
        rows, cols = batch.constraint_index[batch.constraint_recorded].unbind(1)
        batch.old_logprobs[rows, cols] = now[rows, cols]

    def _correct_off_policy(self, batch: TokenBatch) -> dict[str, float]:
        """Proximal log-probs (this model, before the update) and the proximal / behaviour importance weights."""
        self.model.eval()
        proximal = self._per_row(lambda sub: self._logprobs("policy", sub)[0], batch)
        mask = batch.loss_mask
        batch.proximal_logprobs = proximal * mask
        weights = torch.exp((proximal - batch.old_logprobs).clamp(max=20.0)) * mask
        truncated = torch.zeros_like(mask)
        if self.config.off_policy == "truncated_is":
            truncated = (weights > self.config.is_cap) & mask
            weights = weights.clamp(max=self.config.is_cap)
        batch.is_weights = weights
        return {
            "is_weight_mean": _masked_mean(weights, mask),
            "is_weight_max": float(weights[mask].max()) if bool(mask.any()) else 0.0,
            "is_truncated_frac": _masked_mean(truncated.float(), mask),
            "behaviour_gap": _masked_mean((proximal - batch.old_logprobs).abs(), mask),
        }

    def update(self, trajectories: list[Trajectory]) -> dict[str, float]:
        usable = [t for t in trajectories if t.num_policy_tokens > 0]
        if not usable:
            return {"loss": 0.0, "grad_norm": 0.0, "optimizer_steps": 0}
        batch, stats = self.prepare(usable)
        rows = [i for i in range(len(usable)) if bool(batch.loss_mask[i].any())]
        if not rows:
            return {**stats, "loss": 0.0, "grad_norm": 0.0, "optimizer_steps": 0}
        cfg = self.config
        self.model.train()
        collected: dict[str, list[float]] = {}
        for _ in range(cfg.epochs):
            order = rows[:]
            self.rng.shuffle(order)
            n_mb = min(cfg.minibatches, len(order))
            for mb in range(n_mb):
                for key, value in self._step(batch.select(order[mb::n_mb])).items():
                    collected.setdefault(key, []).append(value)
        self.model.eval()
        self.updates += 1
        out = {**stats, **{k: sum(v) / len(v) for k, v in collected.items()}}
        out["optimizer_steps"] = len(collected.get("loss", []))
        return out

    def _step(self, minibatch: TokenBatch) -> dict[str, float]:
        cfg = self.config
        total_tokens = minibatch.num_tokens
        denominator = total_tokens if cfg.aggregation == "token-mean" else minibatch.input_ids.shape[0]
        self.optimizer.zero_grad(set_to_none=True)
        if self.critic_optimizer is not None:
            self.critic_optimizer.zero_grad(set_to_none=True)
        if self.critic is not None:
            self.critic.train()
        sums = {"loss": 0.0, "entropy": 0.0, "clip_frac": 0.0, "approx_kl": 0.0, "ref_kl": 0.0}
        on_list_total = 0
        if cfg.list_log_prob_coef and minibatch.constraint_index is not None:
            on_list_total = minibatch.constraint_index.shape[0]  # the mini-batch's constrained or listed positions
            sums["list_log_prob"] = 0.0
        if self.critic is not None:
            sums.update(value_loss=0.0, value_clip_frac=0.0)
        lengths = minibatch.attention_mask.sum(-1).tolist()
        for rows in self._row_groups(lengths):
            if rows is None:  # a pass that keeps this process in step with the others: its loss counts zero
                batch = minibatch.select([0])
                logp, _, on_list = self._logprobs("policy", batch)
                loss = logp.sum() * 0.0
                if on_list is not None:
                    loss = loss + on_list.sum() * 0.0
                if self.critic is not None:
                    loss = loss + self._values(batch).sum() * 0.0
                loss.backward()
                continue
            batch = minibatch.select(rows)
            share = batch.num_tokens / max(total_tokens, 1)
            logp, entropy, on_list = self._logprobs("policy", batch)
            decoupled = batch.proximal_logprobs is not None
            loss, stats = self.loss_fn(
                logp,
                batch.proximal_logprobs if decoupled else batch.old_logprobs,
                batch.advantages,
                batch.loss_mask,
                clip_low=cfg.clip_low,
                clip_high=cfg.clip_high,
                dual_clip=cfg.dual_clip,
                aggregation=cfg.aggregation,
                denominator=denominator,
                token_weights=batch.is_weights if decoupled else None,
            )
            mask = batch.loss_mask.float()
            if self.reference is not None and cfg.kl_coef > 0:
                kl = kl_estimate(logp, batch.ref_logprobs, cfg.kl_estimator) * mask
                loss = loss + cfg.kl_coef * aggregate(kl, batch.loss_mask, cfg.aggregation, denominator)
                sums["ref_kl"] += float(kl.detach().sum()) / max(total_tokens, 1)
            if cfg.entropy_coef:
                loss = loss - cfg.entropy_coef * (entropy * mask).sum() / max(total_tokens, 1)
            if on_list_total and on_list is not None:  # a micro-batch may hold no constrained or listed reply
                loss = loss - cfg.list_log_prob_coef * on_list.sum() / on_list_total
                sums["list_log_prob"] += float(on_list.detach().sum()) / on_list_total
            if self.critic is not None:
                value_loss, vstats = clipped_value_loss(
                    self._values(batch),
                    batch.old_values,
                    batch.returns,
                    batch.loss_mask,
                    self.critic.config.value_clip,
                    total_tokens,
                )
                loss = loss + (self.critic.config.coef if self.critic.shared else 1.0) * value_loss
                sums["value_loss"] += float(value_loss.detach())
                sums["value_clip_frac"] += vstats["value_clip_frac"] * share
            loss.backward()
            sums["loss"] += float(loss.detach())
            sums["entropy"] += float((entropy.detach() * mask).sum()) / max(total_tokens, 1)
            sums["clip_frac"] += stats["clip_frac"] * share
            sums["approx_kl"] += stats["approx_kl"] * share
        sums = self._combine_sums(sums)
        trained = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = self._clip_grad_norm(trained, cfg.grad_clip)
        if math.isfinite(grad_norm):
            self.optimizer.step()
            self.scheduler.step()
        if self.critic_optimizer is not None:
            critic_norm = self._clip_grad_norm(self.critic.own_parameters(), self.critic.config.grad_clip)
            if math.isfinite(critic_norm):
                self.critic_optimizer.step()
            sums["critic_grad_norm"] = critic_norm
        if self.critic is not None:
            self.critic.eval()
        sums["grad_norm"] = grad_norm
        return sums


def _override_invalid_replies(batch: TokenBatch, trajectories: list[Trajectory], advantage: float) -> None:
    """Every token of a reply the env found invalid trains with ``advantage`` instead of its episode's."""
    for row, trajectory in enumerate(trajectories):
        for turn in trajectory.turns:
            if not turn.valid:
                span = slice(turn.action_start, turn.action_end)
                batch.advantages[row, span] = advantage * batch.loss_mask[row, span]


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    m = mask.float()
    return float((x * m).sum() / m.sum().clamp(min=1))
