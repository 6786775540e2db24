"""Advantage ops (GAE, turn GAE, discounted returns, masked moments) against the float64 loop references.

The Triton kernels run in the interpreter; their outputs are poisoned with NaN first so an element
the kernel never writes fails the comparison. Shapes are odd and tiles small, so every recurrence
crosses tile boundaries.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere in this module's imports

import pytest
import torch

from turnrl.kernels import discounted_returns, gae, masked_moments, turn_gae
from turnrl.kernels.advantages import discounted_returns_reference, gae_reference, turn_gae_reference
from turnrl.kernels.backend import triton_importable
from turnrl.kernels.moments import masked_moments_reference

needs_triton = pytest.mark.skipif(not triton_importable(), reason="triton is not installed")
BACKENDS = ["torch", pytest.param("triton", marks=needs_triton)]
SCHEDULES = [(1.0, 1.0), (0.99, 0.95), (0.7, 0.0), (0.0, 0.5)]


def batch(seed: int, rows: int = 5, steps: int = 37):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(rows, steps, generator=g)
    values = torch.randn(rows, steps, generator=g)
    mask = torch.rand(rows, steps, generator=g) > 0.4
    mask[1] = False  # a row with no policy token at all
    mask[2, -5:] = False  # trailing observation tokens after the last policy token
    turn_ids = torch.cumsum(torch.rand(rows, steps, generator=g) < 0.15, dim=1) - 1
    turn_ids[torch.rand(rows, steps, generator=g) < 0.1] = -1
    return rewards, values, mask, turn_ids


def poisoned(rows: int, steps: int):
    nan = float("nan")
    return torch.full((rows, steps), nan), torch.full((rows, steps), nan), torch.full((rows, 3), nan)


def close(actual, expected, tol=2e-5):
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, atol=tol, rtol=tol)


def assert_moments(stats, values: torch.Tensor, keep: torch.Tensor):
    ref = masked_moments_reference(values, keep)
    for got, want in zip(stats, ref, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("gamma", "lam"), SCHEDULES)
def test_gae_matches_reference(backend, gamma, lam):
    rewards, values, mask, _ = batch(seed=int(gamma * 100 + lam * 10))
    adv_ref, ret_ref = gae_reference(rewards, values, mask, gamma, lam)
    adv, ret, stats = gae(rewards, values, mask, gamma, lam, moments=True, backend=backend)
    close(adv, adv_ref)
    close(ret, ret_ref)
    assert_moments(stats, adv_ref, mask)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("gamma", "lam"), SCHEDULES)
def test_turn_gae_matches_reference(backend, gamma, lam):
    rewards, values, mask, turn_ids = batch(seed=7 + int(gamma * 100 + lam * 10))
    adv_ref, ret_ref = turn_gae_reference(rewards, values, mask, turn_ids, gamma, lam)
    adv, ret, stats = turn_gae(rewards, values, mask, turn_ids, gamma, lam, moments=True, backend=backend)
    close(adv, adv_ref)
    close(ret, ret_ref)
    assert_moments(stats, adv_ref, mask & (turn_ids >= 0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.0])
def test_discounted_returns_matches_reference(backend, gamma):
    rewards, _, mask, _ = batch(seed=11 + int(gamma * 10))
    ref = discounted_returns_reference(rewards, mask, gamma)
    close(discounted_returns(rewards, mask, gamma, backend=backend), ref)
    returns, stats = discounted_returns(rewards, mask, gamma, moments=True, backend=backend)
    close(returns, ref)
    assert_moments(stats, ref, mask)


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_moments_matches_reference(backend):
    x, _, mask, _ = batch(seed=3, rows=6, steps=41)
    assert_moments(masked_moments(x.half(), mask.int(), backend=backend), x.half().double(), mask)


def test_torch_path_long_rows_and_low_precision():
    """Rows longer than the scan's block (several levels of recursion), fp16/bf16 inputs."""
    rewards, values, mask, turn_ids = batch(seed=5, rows=3, steps=4099)
    rewards, values = rewards.half(), values.bfloat16()
    adv_ref, ret_ref = gae_reference(rewards, values, mask, 0.999, 0.97)
    adv, ret = gae(rewards, values, mask, 0.999, 0.97)
    close(adv, adv_ref, tol=2e-4)
    close(ret, ret_ref, tol=2e-4)
    adv_ref, ret_ref = turn_gae_reference(rewards, values, mask, turn_ids, 0.999, 0.97)
    adv, ret = turn_gae(rewards, values, mask, turn_ids, 0.999, 0.97)
    close(adv, adv_ref, tol=2e-4)
    close(ret, ret_ref, tol=2e-4)


@needs_triton
@pytest.mark.parametrize(("block_b", "block_t"), [(1, 8), (2, 16), (4, 64)])
def test_triton_launchers_write_every_element_across_tiles(block_b, block_t):
    from turnrl.kernels import advantages_triton as kt

    rewards, values, mask, turn_ids = batch(seed=block_t, rows=7, steps=45)
    blocks = {"BLOCK_B": block_b, "BLOCK_T": block_t}
    adv, ret, partials = poisoned(7, 45)
    kt.launch_gae(rewards, values, mask, 0.95, 0.9, adv, ret, partials, **blocks)
    adv_ref, ret_ref = gae_reference(rewards, values, mask, 0.95, 0.9)
    close(adv, adv_ref)
    close(ret, ret_ref)
    torch.testing.assert_close(partials[:, 2].double(), mask.sum(1).double())
    torch.testing.assert_close(partials[:, 0].double(), adv_ref.sum(1), atol=1e-4, rtol=1e-5)

    adv, ret, partials = poisoned(7, 45)
    kt.launch_turn_gae(rewards, values, mask.int(), turn_ids, 0.95, 0.9, adv, ret, partials, **blocks)
    adv_ref, ret_ref = turn_gae_reference(rewards, values, mask, turn_ids, 0.95, 0.9)
    close(adv, adv_ref)
    close(ret, ret_ref)

    returns, _, partials = poisoned(7, 45)
    kt.launch_gae(rewards, None, mask, 0.9, 1.0, returns, returns, partials, **blocks)
    close(returns, discounted_returns_reference(rewards, mask, 0.9))

    _, _, partials = poisoned(7, 45)
    kt.launch_masked_moments(rewards, mask, partials, **blocks)
    torch.testing.assert_close(partials[:, 1].double(), (rewards.double() ** 2 * mask).sum(1), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batches(backend):
    for shape in [(0, 9), (3, 0)]:
        empty = torch.zeros(shape)
        adv, ret, stats = gae(empty, empty, empty.bool(), 0.9, 0.9, moments=True, backend=backend)
        assert adv.shape == ret.shape == shape
        assert float(stats.count) == 0.0


def test_bad_inputs_raise_value_error_naming_the_argument():
    rewards, values, mask, turn_ids = batch(seed=1)
    cases = [
        (lambda: gae(rewards, values[:, :-1], mask, 0.9, 0.9), "values"),
        (lambda: gae(rewards, values, mask[:-1], 0.9, 0.9), "mask"),
        (lambda: gae(rewards[0], values, mask, 0.9, 0.9), "rewards"),
        (lambda: gae(rewards.long(), values, mask, 0.9, 0.9), "rewards"),
        (lambda: gae(rewards, values, mask, 1.5, 0.9), "gamma"),
        (lambda: gae(rewards, values, mask, 0.9, -0.1), "lam"),
        (lambda: gae(rewards, values.to("meta"), mask, 0.9, 0.9), "values"),
        (lambda: gae(rewards, None, mask, 0.9, 0.9), "values"),
        (lambda: gae(rewards, values, mask, 0.9, 0.9, backend="cuda"), "backend"),
        (lambda: turn_gae(rewards, values, mask, turn_ids.float(), 0.9, 0.9), "turn_ids"),
        (lambda: turn_gae(rewards, values, mask, None, 0.9, 0.9), "turn_ids"),
        (lambda: discounted_returns(rewards, [[1.0]], 0.9), "mask"),
        (lambda: masked_moments(rewards, mask.t()), "mask"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            call()


def test_non_finite_inputs_are_reported_not_propagated():
    rewards, values, mask, _ = batch(seed=2)
    bad = values.clone()
    bad[3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"^values contains 1 NaN or inf"):
        gae(rewards, bad, mask, 0.9, 0.9)
    bad = rewards.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"^rewards contains"):
        discounted_returns(bad, mask, 0.9)
    with pytest.raises(ValueError, match=r"^x contains"):
        masked_moments(bad, mask)
    # opting out of the scan is explicit, and then the value flows through
    adv, _ = gae(bad, values, torch.ones_like(mask), 0.9, 0.9, check_finite=False)
    assert not bool(torch.isfinite(adv).all())
