"""KL estimators k1, k2, k3 against their closed forms; an unknown estimator is refused."""

from __future__ import annotations

import pytest
import torch

from turnrl.algorithms.kl import kl_estimate


def test_kl_estimators():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -2.0, -0.2])
    d = logp - ref
    assert torch.allclose(kl_estimate(logp, ref, "k1"), d)
    assert torch.allclose(kl_estimate(logp, ref, "k2"), 0.5 * d**2)
    k3 = kl_estimate(logp, ref, "k3")
    assert torch.allclose(k3, torch.exp(-d) + d - 1) and bool((k3 >= 0).all()) and float(k3[1]) == 0.0
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k4")
