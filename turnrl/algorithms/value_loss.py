"""Clipped value loss for the critic.

Invariant: ``v_clip = v_old + clip(v - v_old, -c, c)`` and per token
``0.5 * max((v - R)^2, (v_clip - R)^2)``, averaged over the masked tokens with a
caller-supplied denominator (so micro-batches add up to the mini-batch loss).
"""

from __future__ import annotations

import torch


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None,
    denominator: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    if clip is not None and clip <= 0:
        raise ValueError(f"value clip must be > 0 (or None), got {clip}")
    m = mask.to(values.dtype)
    unclipped = (values - returns).square()
    if clip is None:
        per_token = 0.5 * unclipped
        clipped_share = 0.0
    else:
        v_clip = old_values + (values - old_values).clamp(-clip, clip)
        clipped = (v_clip - returns).square()
        per_token = 0.5 * torch.maximum(unclipped, clipped)
        clipped_share = float(((clipped > unclipped).to(m.dtype) * m).sum() / m.sum().clamp(min=1))
    loss = (per_token * m).sum() / max(float(denominator), 1.0)
    return loss, {"value_clip_frac": clipped_share}
