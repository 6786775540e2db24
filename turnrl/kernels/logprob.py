"""Log-probability and entropy of target tokens from hidden states and the LM head, without the logits.

Invariant: ``log p(target) = z_target - logsumexp(z)`` and ``entropy = -sum softmax(z) * log_softmax(z)``
with ``z = (h @ W.T) / temperature``, accumulated in float32 whatever the input dtype; rows whose
target is ``ignore_index`` get 0 for both and no gradient. ``linear_logprob_entropy`` never holds the
``[N, V]`` logits: CUDA tensors go to the Triton kernels (``logprob_triton``), anything else to the
chunked torch path (``logprob_torch``); both tile the vocabulary with an online logsumexp and
recompute tiles in backward. ``logprob_entropy_reference`` materialises everything and is the spec.

Bad shapes, dtypes, devices, out-of-range targets or temperatures raise ``ValueError`` naming the
argument before anything is computed. With ``check_finite`` (the default) a non-finite output is
traced back to its input (``hidden``/``weight`` containing NaN or inf, or logits overflowing) and
raised as ``ValueError``, instead of flowing into an update; the happy path pays one ``[N]`` scan.
"""

from __future__ import annotations

import torch

from turnrl.kernels import checks
from turnrl.kernels.backend import choose
from turnrl.kernels.logprob_torch import DEFAULT_ROWS, linear_logprob_entropy_torch

TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def logprob_entropy_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec: materialise the logits (float32, or float64 for float64 inputs) and compute both outputs."""
    dtype = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
    logits = (hidden.to(dtype) @ weight.to(dtype).t()) / temperature
    valid = targets != ignore_index
    log_probs = torch.log_softmax(logits, dim=-1)
    target_logp = log_probs.gather(-1, targets.long().clamp(min=0).unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return torch.where(valid, target_logp, 0.0), torch.where(valid, entropy, 0.0)


def _check(hidden, weight, targets, temperature, ignore_index) -> torch.Tensor:
    checks.tensor("hidden", hidden, 2, checks.FLOAT_DTYPES)
    checks.tensor("weight", weight, 2, checks.FLOAT_DTYPES)
    checks.tensor("targets", targets, 1, checks.INT_DTYPES)
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight has dtype {weight.dtype}, expected {hidden.dtype} (the dtype of hidden)")
    if weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"weight has shape {tuple(weight.shape)}: its second dimension must equal the hidden "
            f"size {hidden.shape[1]} of hidden"
        )
    if weight.shape[0] == 0:
        raise ValueError("weight has no rows (an empty vocabulary)")
    checks.same_shape("targets", targets, (hidden.shape[0],), "hidden's first dimension")
    checks.same_device("weight", weight, hidden.device, "hidden")
    checks.same_device("targets", targets, hidden.device, "hidden")
    checks.positive("temperature", temperature)
    if not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    valid = targets != ignore_index
    out_of_range = valid & ((targets < 0) | (targets >= weight.shape[0]))
    if bool(out_of_range.any()):
        first = int(targets[out_of_range][0])
        raise ValueError(
            f"targets has {int(out_of_range.sum())} id(s) outside [0, {weight.shape[0]}) that are not "
            f"ignore_index={ignore_index} (first: {first})"
        )
    return valid


def _report_non_finite(logp, entropy, hidden, weight, valid) -> None:
    if bool(torch.isfinite(logp).all()) and bool(torch.isfinite(entropy).all()):
        return
    checks.finite("hidden", hidden[valid])
    checks.finite("weight", weight)
    raise ValueError("hidden @ weight.T / temperature overflows float32: the logits are not finite")


def linear_logprob_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    ignore_index: int = -100,
    *,
    backend: str | None = None,
    check_finite: bool = True,
    chunk_rows: int = DEFAULT_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(target), entropy)``, float32 ``[N]``, differentiable w.r.t. ``hidden`` ``[N, H]`` and
    ``weight`` ``[V, H]``; ``chunk_rows`` bounds the rows per tile on the torch path."""
    valid = _check(hidden, weight, targets, temperature, ignore_index)
    if choose(hidden.device, backend) == "triton":
        if hidden.dtype not in TRITON_DTYPES:
            raise ValueError(f"hidden has dtype {hidden.dtype}; the triton backend takes float32, float16, bfloat16")
        from turnrl.kernels.logprob_triton import linear_logprob_entropy_triton

        logp, entropy = linear_logprob_entropy_triton(hidden, weight, targets, valid, float(temperature))
    else:
        rows = int(checks.positive("chunk_rows", chunk_rows))
        logp, entropy = linear_logprob_entropy_torch(hidden, weight, targets, valid, float(temperature), rows)
    if check_finite:
        _report_non_finite(logp, entropy, hidden, weight, valid)
    return logp, entropy


def logprob_entropy_chunked(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int = DEFAULT_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch path of ``linear_logprob_entropy`` on any device, ``chunk_rows`` rows at a time."""
    return linear_logprob_entropy(hidden, weight, targets, temperature, backend="torch", chunk_rows=chunk_rows)
