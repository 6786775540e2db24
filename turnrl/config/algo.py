"""The learner, the critic and the advantage estimator's parameters.

Invariant: a leaf: imports nothing heavier than msgspec; a struct is validated when built (a bad value raises
``ValueError`` naming its key).
"""

from __future__ import annotations

import math

import msgspec

# The names the algorithms room provides (a test checks each against its registry or table).
ADVANTAGE_ESTIMATOR_NAMES = ("grpo", "ppo", "reinforce_pp", "rloo")
KL_ESTIMATOR_NAMES = ("k1", "k2", "k3")
AGGREGATION_NAMES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")
OFF_POLICY_CORRECTIONS = ("none", "decoupled", "truncated_is")
OFF_LIST_LOG_PROBS = ("mass", "even")  # the log-prob of the token where a free-text reply left the env's list


class AdvantageParams(msgspec.Struct, frozen=True, kw_only=True):
    gamma: float = 1.0
    lam: float = 1.0
    eps: float = 1e-6
    scale_by_std: bool = True  # GRPO; False gives Dr.GRPO
    whiten: bool = True  # PPO: whiten GAE advantages over the batch's policy tokens
    kl_reward_coef: float = 0.0  # REINFORCE++: KL to the reference folded into the reward
    kl_reward_estimator: str = "k1"

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {self.lam}")
        if self.kl_reward_coef < 0:
            raise ValueError(f"kl_reward_coef must be >= 0, got {self.kl_reward_coef}")


CRITIC_KINDS = ("separate", "head")


class CriticConfig(msgspec.Struct, frozen=True, kw_only=True):
    kind: str = "separate"  # "separate": own trunk copied from the policy; "head": value head on the policy trunk
    lr: float = 1e-3
    value_clip: float | None = 0.5
    coef: float = 0.5  # weight of the value loss in a shared-trunk update
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in CRITIC_KINDS:
            raise ValueError(f"critic.kind must be one of {', '.join(CRITIC_KINDS)}, got {self.kind!r}")
        if not self.lr > 0:
            raise ValueError(f"critic.lr must be > 0, got {self.lr}")
        if self.value_clip is not None and self.value_clip <= 0:
            raise ValueError(f"critic.value_clip must be > 0 or None, got {self.value_clip}")


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
    filter_zero_variance_groups: bool = False  # drop groups whose rewards are all equal (no signal)
    # Tokens sampled by older weights (eta > 0): "none" clips the ratio to the sampling (behaviour) log-probs;
    # "decoupled" clips it to proximal log-probs recomputed before the update and weights each token by
    # proximal / behaviour; "truncated_is" does the same with that weight capped at ``is_cap``.
    off_policy: str = "none"
    is_cap: float = 2.0
    # Free text: None trains a reply the env found invalid with its episode's advantage (so it shares the credit
    # of a success that came despite it); a number trains its tokens with this advantage instead.
    invalid_reply_advantage: float | None = None
    # rollout.episode.learn_from_listed_actions: the advantage of a reply's one trained token where it left the
    # env's list (its log-prob is the list's mass there, so a positive value moves mass back onto the list).
    off_list_advantage: float = 1.0
    # ... and that token's log-prob: "mass" the list's probability there (raises the listed logits in proportion
    # to their probabilities, sharpening the odds among them), "even" the same with the listed logits at their
    # mean (raises them all alike: the odds among the listed replies stay as they were).
    off_list_log_prob: str = "mass"
    # ... and the weight of a term that raises, at every trained token of a reply trained beside the list or
    # sampled under it (constrain_to_valid_actions), that same log-prob of the list: a dense format signal that
    # lowers the unlisted tokens wherever the policy writes, where off_list_advantage acts only where a sampled
    # reply left the list. 0 turns it off.
    list_log_prob_coef: float = 0.0
    # No temperature here: the learner computes log-probs at the temperature the tokens were sampled at
    # (rollout.episode.temperature), so the ratio can never mix two temperatures.

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.minibatches < 1 or self.epochs < 1:
            raise ValueError("minibatches and epochs must be >= 1")
        if self.clip_low < 0 or self.clip_high < 0:
            raise ValueError(f"clip ranges must be >= 0, got low={self.clip_low}, high={self.clip_high}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1, got {self.dual_clip}")
        if self.lr_warmup_steps < 0:
            raise ValueError(f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if self.micro_batch_tokens < 1:
            raise ValueError("micro_batch_tokens must be >= 1")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.kl_estimator not in KL_ESTIMATOR_NAMES:
            raise ValueError(
                f"unknown kl_estimator {self.kl_estimator!r}; choose from: {', '.join(KL_ESTIMATOR_NAMES)}"
            )
        if self.aggregation not in AGGREGATION_NAMES:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; choose from: {', '.join(AGGREGATION_NAMES)}")
        if self.off_policy not in OFF_POLICY_CORRECTIONS:
            known = ", ".join(OFF_POLICY_CORRECTIONS)
            raise ValueError(f"unknown off_policy {self.off_policy!r}; choose from: {known}")
        if not self.is_cap >= 1:
            raise ValueError(f"is_cap must be >= 1, got {self.is_cap}")
        if self.off_list_log_prob not in OFF_LIST_LOG_PROBS:
            known = ", ".join(OFF_LIST_LOG_PROBS)
            raise ValueError(f"off_list_log_prob must be one of {known}, got {self.off_list_log_prob!r}")
        if not (self.list_log_prob_coef >= 0 and math.isfinite(self.list_log_prob_coef)):
            raise ValueError(f"list_log_prob_coef must be a finite number >= 0, got {self.list_log_prob_coef}")
        if not math.isfinite(self.off_list_advantage):
            raise ValueError(f"off_list_advantage must be a finite number, got {self.off_list_advantage}")
        if self.invalid_reply_advantage is not None and not math.isfinite(self.invalid_reply_advantage):
            raise ValueError(
                f"invalid_reply_advantage must be a finite number or None, got {self.invalid_reply_advantage}"
            )
