"""Fused linear log-prob + entropy (torch path and Triton kernels) against the float64 reference.

Triton runs in the interpreter. The forward kernel's partial states are poisoned with NaN before
the launch, so a row or split the kernel never writes fails; gradients are compared, element by
element, with autograd through the materialised float64 reference.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere in this module's imports

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from turnrl.kernels import linear_logprob_entropy
from turnrl.kernels.backend import triton_importable
from turnrl.kernels.logprob import logprob_entropy_chunked, logprob_entropy_reference
from turnrl.kernels.logprob_torch import linear_logprob_entropy_torch

needs_triton = pytest.mark.skipif(not triton_importable(), reason="triton is not installed")
BACKENDS = ["torch", pytest.param("triton", marks=needs_triton)]
N, H, V = 37, 19, 131


def problem(seed: int, scale: float = 1.0, dtype=torch.float32, all_negative: bool = False, ignored: int = 3):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g) * scale
    weight = torch.randn(V, H, generator=g)
    if all_negative:  # every logit below -scale: the max's identity must not be 0
        hidden, weight = hidden.abs() + 0.1, -weight.abs() - 0.1
    targets = torch.randint(0, V, (N,), generator=g)
    targets[torch.randperm(N, generator=g)[:ignored]] = -100
    grads = torch.randn(N, generator=g), torch.randn(N, generator=g)
    return hidden.to(dtype), weight.to(dtype), targets, grads


def reference(hidden, weight, targets, temperature, grads):
    h, w = hidden.double().requires_grad_(), weight.double().requires_grad_()
    logp, entropy = logprob_entropy_reference(h, w, targets, temperature)
    torch.autograd.backward((logp, entropy), (grads[0].double(), grads[1].double()))
    return logp.detach(), entropy.detach(), h.grad, w.grad


def fused(fn, hidden, weight, targets, temperature, grads, **kwargs):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logp, entropy = fn(h, w, targets, temperature, **kwargs)
    assert logp.dtype == entropy.dtype == torch.float32
    torch.autograd.backward((logp, entropy), grads)
    assert h.grad.dtype == hidden.dtype and w.grad.dtype == weight.dtype
    return logp.detach(), entropy.detach(), h.grad, w.grad


def assert_matches(got, want, rtol: float):
    for name, a, b in zip(("logp", "entropy", "grad_hidden", "grad_weight"), got, want, strict=True):
        assert bool(torch.isfinite(a).all()), name
        tol = rtol * max(1.0, float(b.abs().max()))
        torch.testing.assert_close(a.double(), b, atol=tol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("temperature", "scale", "all_negative"),
    [(1.0, 1.0, False), (0.7, 3.0, False), (1.6, 1.0, True), (1.0, 60.0, False), (0.9, 40.0, True)],
)
def test_fused_matches_reference(backend, temperature, scale, all_negative):
    """Ordinary, peaked (p ~ 0 almost everywhere: entropy gradients must stay finite) and all-negative logits."""
    hidden, weight, targets, grads = problem(int(scale * 10 + temperature * 3), scale, all_negative=all_negative)
    want = reference(hidden, weight, targets, temperature, grads)
    got = fused(linear_logprob_entropy, hidden, weight, targets, temperature, grads, backend=backend)
    assert_matches(got, want, rtol=2e-5)
    assert bool((got[0] <= 0).all())
    ignored = targets == -100
    assert bool((got[0][ignored] == 0).all() and (got[1][ignored] == 0).all())
    assert bool((got[2][ignored] == 0).all())


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=12, deadline=None, database=None)
@given(
    n=st.integers(1, 19),
    h=st.integers(1, 13),
    v=st.integers(1, 45),
    temperature=st.floats(0.25, 3.0),
    ignored=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_odd_shapes_match_reference(backend, n, h, v, temperature, ignored, seed):
    """Any small shape (a vocabulary of one, a hidden size of one, every row ignored) against the reference."""
    g = torch.Generator().manual_seed(seed)
    hidden, weight = torch.randn(n, h, generator=g), torch.randn(v, h, generator=g)
    targets = torch.randint(0, v, (n,), generator=g)
    targets[torch.rand(n, generator=g) < ignored] = -100
    grads = torch.randn(n, generator=g), torch.randn(n, generator=g)
    want = reference(hidden, weight, targets, temperature, grads)
    got = fused(linear_logprob_entropy, hidden, weight, targets, temperature, grads, backend=backend)
    assert_matches(got, want, rtol=2e-5)
    assert bool((got[0][targets == -100] == 0).all() and (got[1][targets == -100] == 0).all())


@pytest.mark.parametrize(("rows", "cols"), [(8, 16), (5, 131), (64, 7)])
def test_torch_path_tiles(rows, cols):
    hidden, weight, targets, grads = problem(rows + cols, 2.0)
    valid = targets != -100
    want = reference(hidden, weight, targets, 0.8, grads)

    def run(h, w, t, temperature):
        return linear_logprob_entropy_torch(h, w, t, valid, temperature, rows, cols)

    assert_matches(fused(run, hidden, weight, targets, 0.8, grads), want, rtol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision_inputs(backend):
    """float16 on both paths (the interpreter's bfloat16 tl.dot is wrong, bf16 is tested on the torch path)."""
    for dtype in (torch.float16, torch.bfloat16) if backend == "torch" else (torch.float16,):
        hidden, weight, targets, grads = problem(5, 2.0, dtype=dtype)
        want = reference(hidden, weight, targets, 1.0, grads)
        got = fused(linear_logprob_entropy, hidden, weight, targets, 1.0, grads, backend=backend)
        assert_matches(got, want, rtol=2e-2)


@needs_triton
@pytest.mark.parametrize(
    ("blocks", "splits"),
    [
        ({"BLOCK_N": 16, "BLOCK_V": 16, "BLOCK_H": 16}, 4),  # 9 vocabulary tiles over 4 splits: the last one is empty
        ({"BLOCK_N": 32, "BLOCK_V": 32, "BLOCK_H": 16}, 1),
        ({"BLOCK_N": 16, "BLOCK_V": 64, "BLOCK_H": 32}, 3),
    ],
)
def test_triton_launchers_across_tiles_and_splits(blocks, splits):
    from turnrl.kernels import logprob_triton as kt

    hidden, weight, targets, grads = problem(splits, 2.0)
    valid = targets != -100
    tgt = torch.where(valid, targets, -1).to(torch.int32)
    want = reference(hidden, weight, targets, 0.9, grads)
    assert kt.forward_splits(hidden, weight, splits, **blocks) == splits
    partials = torch.full((splits, 4, N), float("nan"))
    kt.launch_forward(hidden, weight, tgt, 1 / 0.9, partials, **blocks)
    logp, entropy, lse = kt.merge(partials, valid)
    grad_h, grad_w = torch.zeros(N, H), torch.zeros(V, H)  # accumulated into, so they start at 0
    kt.launch_backward(
        hidden, weight, tgt, lse, entropy, grads[0], grads[1], grad_h, grad_w, 1 / 0.9, splits=splits, **blocks
    )
    assert_matches((logp, entropy, grad_h, grad_w), want, rtol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_the_gradients_asked_for(backend):
    hidden, weight, targets, grads = problem(9)
    want = reference(hidden, weight, targets, 1.0, grads)
    w = weight.clone().requires_grad_()
    logp, entropy = linear_logprob_entropy(hidden, w, targets, backend=backend)
    torch.autograd.backward((logp, entropy), grads)
    torch.testing.assert_close(w.grad.double(), want[3], atol=1e-4, rtol=1e-4)
    h = hidden.clone().requires_grad_()
    logp, _ = linear_logprob_entropy(h, weight, targets, backend=backend)
    logp.backward(grads[0])  # entropy unused: its gradient arrives as None
    _, _, grad_h, _ = reference(hidden, weight, targets, 1.0, (grads[0], torch.zeros(N)))
    torch.testing.assert_close(h.grad.double(), grad_h, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_input(backend):
    hidden, weight, targets, _ = problem(1)
    logp, entropy = linear_logprob_entropy(hidden[:0], weight, targets[:0], backend=backend)
    assert logp.shape == entropy.shape == (0,)


def test_bad_inputs_raise_value_error_naming_the_argument():
    hidden, weight, targets, _ = problem(2)
    cases = [
        (lambda: linear_logprob_entropy(hidden[0], weight, targets), "hidden"),
        (lambda: linear_logprob_entropy(hidden, weight.half(), targets), "weight"),
        (lambda: linear_logprob_entropy(hidden, weight[:, :-1], targets), "weight"),
        (lambda: linear_logprob_entropy(hidden, weight[:0], targets), "weight"),
        (lambda: linear_logprob_entropy(hidden, weight.to("meta"), targets), "weight"),
        (lambda: linear_logprob_entropy(hidden, weight, targets[:-1]), "targets"),
        (lambda: linear_logprob_entropy(hidden, weight, targets.float()), "targets"),
        (lambda: linear_logprob_entropy(hidden, weight, targets.clamp(min=0) + V - 1), "targets"),
        (lambda: linear_logprob_entropy(hidden, weight, targets, temperature=0.0), "temperature"),
        (lambda: linear_logprob_entropy(hidden, weight, targets, ignore_index=0.5), "ignore_index"),
        (lambda: linear_logprob_entropy(hidden, weight, targets, backend="cuda"), "backend"),
        (lambda: linear_logprob_entropy(hidden.long(), weight.long(), targets), "hidden"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            call()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, inside the interpreter, on the NaN inputs
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_inputs_are_reported(backend):
    hidden, weight, targets, grads = problem(4)
    bad = hidden.clone()
    bad[int((targets != -100).nonzero()[0])] = float("nan")
    with pytest.raises(ValueError, match=r"^hidden contains"):
        linear_logprob_entropy(bad, weight, targets, backend=backend)
    bad_w = weight.clone()
    bad_w[7, 3] = float("inf")
    with pytest.raises(ValueError, match=r"^weight contains"):
        linear_logprob_entropy(hidden, bad_w, targets, backend=backend)
    # a NaN in an ignored row is never read: outputs and gradients stay exact
    bad = hidden.clone()
    bad[targets == -100] = float("nan")
    want = reference(hidden, weight, targets, 1.0, grads)
    got = fused(linear_logprob_entropy, bad, weight, targets, 1.0, grads, backend=backend)
    assert bool(torch.isfinite(got[3]).all())
    torch.testing.assert_close(got[3].double(), want[3], atol=1e-4, rtol=1e-4)


def test_chunked_logprob_matches_float64_reference():
    torch.manual_seed(0)
    hidden = torch.randn(37, 19, requires_grad=True)
    weight = torch.randn(53, 19, requires_grad=True)
    targets = torch.randint(0, 53, (37,))
    lp, ent = logprob_entropy_chunked(hidden, weight, targets, temperature=0.7, chunk_rows=8)
    (lp.sum() + 0.3 * ent.sum()).backward()
    h64, w64 = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    logits = (h64 @ w64.t()) / 0.7
    ref_lp = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    p = logits.softmax(-1)
    ref_ent = -(p * logits.log_softmax(-1)).sum(-1)
    (ref_lp.sum() + 0.3 * ref_ent.sum()).backward()
    assert torch.allclose(lp.double(), ref_lp, atol=1e-4) and torch.allclose(ent.double(), ref_ent, atol=1e-4)
    assert torch.allclose(hidden.grad.double(), h64.grad, atol=1e-3)
    assert torch.allclose(weight.grad.double(), w64.grad, atol=1e-3)
    lp2, _ = logprob_entropy_reference(hidden.detach(), weight.detach(), targets, 0.7)
    assert torch.allclose(lp.detach(), lp2, atol=1e-5)
    empty = logprob_entropy_chunked(hidden[:0], weight, targets[:0])
    assert empty[0].shape == (0,)
