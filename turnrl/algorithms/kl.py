"""Per-token KL estimators between the policy and a frozen reference, on sampled tokens.

Invariant: with ``d = logp - ref_logp`` on tokens sampled from the policy,
k1 = d (unbiased, can be negative), k2 = d^2 / 2, k3 = exp(-d) + d - 1
(unbiased, always >= 0, low variance); all are 0 where ``d = 0``.
"""

from __future__ import annotations

import torch

from turnrl.config.algo import KL_ESTIMATOR_NAMES

KL_ESTIMATORS = KL_ESTIMATOR_NAMES


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3", clamp: float = 20.0) -> torch.Tensor:
    d = (logp - ref_logp).clamp(-clamp, clamp)
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d.square()
    if kind == "k3":
        return torch.exp(-d) + d - 1.0
    raise ValueError(f"unknown KL estimator {kind!r}; choose from: {', '.join(KL_ESTIMATORS)}")
