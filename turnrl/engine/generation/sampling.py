"""Sampling one token per row from a causal LM's last logits, and restricting them to allowed completions.

Invariants:
- the log-prob returned for a token is ``log_softmax(logits / T)[token]`` in fp32 (``T = 1`` for greedy), the
  distribution before top-p filtering: exactly what the learner recomputes;
- a constrained row samples only tokens that keep its output on one of its allowed completions (see
  ``models.constraints``), from the distribution renormalised over them.
"""

from __future__ import annotations

import torch

from turnrl.models.constraints import allowed_next
from turnrl.protocol import GenerateRequest


def sample_tokens(
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row and its log-prob under the temperature-scaled (unfiltered) distribution."""
    greedy = temperature <= 0
    scale = torch.where(greedy, torch.ones_like(temperature), temperature)
    logp = torch.log_softmax(logits.float() / scale[:, None], dim=-1)
    probs = logp.exp()
    if bool((top_p < 1).any()):
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = (sorted_p.cumsum(-1) - sorted_p) < top_p[:, None]
        filtered = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
        probs = filtered / filtered.sum(-1, keepdim=True)
    sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    tokens = torch.where(greedy, logits.argmax(-1), sampled)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def constrain_logits(logits: torch.Tensor, requests: list[GenerateRequest], outputs: list[list[int]]) -> torch.Tensor:
    """``logits`` with every token a constrained row may not produce next set to -inf."""
    masked = logits.clone()
    for row, request in enumerate(requests):
        if request.allowed is None:
            continue
        allowed = allowed_next(request.allowed, outputs[row])
        keep = torch.full_like(masked[row], float("-inf"))
        if allowed:  # empty only for a finished row, whose sample is discarded
            index = torch.tensor(allowed, device=logits.device)
            keep[index] = masked[row, index]
        else:
            keep.zero_()
        masked[row] = keep
    return masked
