"""Log-probability and entropy of target tokens from hidden states and the LM head.

Invariant: ``log p(target) = z_target - logsumexp(z)`` and
``entropy = logsumexp(z) - sum softmax(z) * z`` with ``z = (h @ W.T) / temperature``,
accumulated in fp32 whatever the input dtype. The chunked path never holds more
than ``chunk_rows x V`` logits at once, forward or backward (each chunk is
recomputed in backward).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def logprob_entropy_reference(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec: materialise the logits in fp32 and compute both outputs directly."""
    logits = hidden.float() @ weight.float().t()
    logits = logits / temperature
    logz = torch.logsumexp(logits, dim=-1)
    target_logit = logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    probs = torch.softmax(logits, dim=-1)
    entropy = logz - (probs * logits).sum(-1)
    return target_logit - logz, entropy


def _chunk(hidden, weight, targets, temperature: float):
    return logprob_entropy_reference(hidden, weight, targets, temperature)


def logprob_entropy_chunked(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory-frugal torch path: row chunks, each recomputed in backward."""
    if hidden.shape[0] == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, empty
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    logps, ents = [], []
    for start in range(0, hidden.shape[0], chunk_rows):
        rows = slice(start, start + chunk_rows)
        if needs_grad:
            lp, ent = checkpoint(_chunk, hidden[rows], weight, targets[rows], temperature, use_reentrant=False)
        else:
            lp, ent = _chunk(hidden[rows], weight, targets[rows], temperature)
        logps.append(lp)
        ents.append(ent)
    return torch.cat(logps), torch.cat(ents)
