"""Clipped policy-gradient surrogate and its aggregation over tokens.

Invariant: per token, ``ratio = exp(logp - old_logp)`` and
``loss = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)``; with a
dual clip ``c > 1`` the loss of a negative-advantage token is at most ``-c * A``.
With ``token_weights`` (importance weights, no gradient) each token's loss is
multiplied by its weight before aggregation. Tokens outside the mask contribute nothing. Aggregation divides by a
caller-supplied global count so that micro-batches of one mini-batch add up to
exactly the mini-batch loss.
"""

from __future__ import annotations

import torch

from turnrl.algorithms.registry import register_policy_loss
from turnrl.config.algo import AGGREGATION_NAMES

AGGREGATIONS = AGGREGATION_NAMES


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str, denominator: float) -> torch.Tensor:
    """Sum of masked ``values`` [B, T] normalised as ``mode`` says, divided by ``denominator``.

    ``denominator`` is the total number of masked tokens (token-mean) or sequences
    (seq-mean-*) in the whole mini-batch.
    """
    mask = mask.to(values.dtype)
    if mode == "token-mean":
        total = (values * mask).sum()
    elif mode == "seq-mean-token-sum":
        total = (values * mask).sum(-1).sum()
    elif mode == "seq-mean-token-mean":
        total = ((values * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum()
    else:
        raise ValueError(f"unknown aggregation {mode!r}; choose from: {', '.join(AGGREGATIONS)}")
    return total / max(float(denominator), 1.0)


@register_policy_loss("clipped")
def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    aggregation: str = "token-mean",
    denominator: float | None = None,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip ranges must be >= 0, got low={clip_low}, high={clip_high}")
    if dual_clip is not None and dual_clip <= 1:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    mask_f = mask.to(logp.dtype)
    log_ratio = (logp - old_logp) * mask_f
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        capped = torch.minimum(per_token, -advantages * dual_clip)
        per_token = torch.where(advantages < 0, capped, per_token)
    if token_weights is not None:
        per_token = per_token * token_weights.detach()
    if denominator is None:
        denominator = float(mask_f.sum()) if aggregation == "token-mean" else float(mask.shape[0])
    loss = aggregate(per_token, mask, aggregation, denominator)
    with torch.no_grad():
        n = mask_f.sum().clamp(min=1)
        stats = {
            "clip_frac": float(((clipped > unclipped).to(logp.dtype) * mask_f).sum() / n),
            "approx_kl": float((((ratio - 1) - log_ratio) * mask_f).sum() / n),
            "ratio_mean": float((ratio * mask_f).sum() / n),
        }
    return loss, stats
