"""Masked whitening statistics: sum, sum of squares and count of ``x`` where ``mask != 0``.

Invariant: every field of ``Moments`` is a float64 0-d tensor on ``x``'s device;
partial sums are float32 over at most one row (Triton) and are added up in
float64, so the statistics of a batch can also be summed across ranks (stack
the three, all-reduce, rebuild) before taking ``mean``/``var``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from turnrl.kernels import checks
from turnrl.kernels.backend import choose


class Moments(NamedTuple):
    sum: torch.Tensor
    sum_sq: torch.Tensor
    count: torch.Tensor

    def mean(self) -> torch.Tensor:
        return self.sum / self.count.clamp(min=1)

    def var(self) -> torch.Tensor:
        """Population variance (0 when nothing is counted)."""
        return (self.sum_sq / self.count.clamp(min=1) - self.mean() ** 2).clamp(min=0)


def masked_moments_reference(x: torch.Tensor, mask: torch.Tensor) -> Moments:
    picked = x.double()[mask != 0]
    return Moments(picked.sum(), (picked**2).sum(), torch.tensor(float(picked.numel()), dtype=torch.float64))


def masked_moments_torch(x: torch.Tensor, mask: torch.Tensor) -> Moments:
    keep = (mask != 0).float()
    xf = x.float() * keep
    rows = torch.stack([xf.sum(1), (xf * xf).sum(1), keep.sum(1)], dim=1)  # float32 per row
    return moments_from_partials(rows)


def moments_from_partials(partials: torch.Tensor) -> Moments:
    """``[P, 3]`` float32 partial (sum, sum_sq, count) -> float64 ``Moments``."""
    total = partials.double().sum(0)
    return Moments(total[0], total[1], total[2])


def masked_moments(
    x: torch.Tensor, mask: torch.Tensor, *, backend: str | None = None, check_finite: bool = True
) -> Moments:
    """``(sum, sum_sq, count)`` of ``x[mask != 0]`` for ``x``, ``mask`` of shape ``[B, T]``."""
    checks.tensor("x", x, 2, checks.FLOAT_DTYPES)
    checks.tensor("mask", mask, 2, checks.MASK_DTYPES)
    checks.same_shape("mask", mask, x.shape, "x")
    checks.same_device("mask", mask, x.device, "x")
    if check_finite:
        checks.finite("x", x)
        checks.finite("mask", mask)
    if choose(x.device, backend) == "triton":
        from turnrl.kernels.advantages_triton import masked_moments_triton

        return moments_from_partials(masked_moments_triton(x, mask))
    return masked_moments_torch(x, mask)
