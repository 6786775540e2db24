"""Copy rehearsal: repeated random token spans trained beside the format warm-up.

The format warm-up alone erases an induction circuit (``models.induction_init``). On TextCraft's
warm-up it copied no repeated span after 25 steps: what the rest of the model learns first swamps the
copy. This term keeps the circuit useful. Each row is random filler, a random span, the same span
again, then random filler. Its loss is the likelihood of the repeated span after its first token,
which only copying from the first occurrence predicts.

Invariants:
- The tokens are drawn uniformly from the ids given (the tokenizer's non-special ids). No env text is
  involved, so the term carries no task knowledge.
- ``mask[r, t]`` marks exactly the repeated tokens after the first: ``ids[r, t] == ids[r, t - span]``
  holds there, and the earlier copy is whole in the row.
- The loss is the mean negative log-likelihood of the marked tokens. It is computed with the
  training forward pass (``logprobs_from_hidden``), so full-vocabulary logits are never built.
"""

from __future__ import annotations

import random

import torch

from turnrl.models.forward import hidden_states, logprobs_from_hidden


def plain_token_ids(tokenizer) -> list[int]:
    """The tokenizer's ids other than its special tokens: what the rows are drawn from."""
    specials = set(tokenizer.all_special_ids)
    return [i for i in range(len(tokenizer)) if i not in specials]


def repeated_span_batch(
    rng: random.Random,
    token_ids: list[int],
    rows: int,
    length: int = 192,
    min_span: int = 8,
    max_span: int = 64,
    max_lead: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [rows, length], mask [rows, length]): per row ``lead`` random tokens, a random span of ``span``
    tokens, the span again, then random tokens up to ``length``."""
    if not token_ids:
        raise ValueError("copy rehearsal needs at least one token id to draw from")
    if not 2 <= min_span <= max_span or max_lead + 2 * max_span > length:
        raise ValueError(f"spans {min_span}-{max_span} after a lead of <= {max_lead} do not fit twice in {length}")
    ids, mask = [], []
    for _ in range(rows):
        lead, span = rng.randint(0, max_lead), rng.randint(min_span, max_span)
        first = [rng.choice(token_ids) for _ in range(span)]
        row = [rng.choice(token_ids) for _ in range(lead)] + first + first
        marked = [False] * (lead + span + 1) + [True] * (span - 1)
        row += [rng.choice(token_ids) for _ in range(length - len(row))]
        ids.append(row)
        mask.append(marked + [False] * (length - len(marked)))
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.bool)


def repeated_span_nll(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean negative log-likelihood of the marked tokens of ``ids`` under ``model``."""
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    hidden = hidden_states(model, ids, torch.ones_like(ids))
    logp = logprobs_from_hidden(hidden, model.get_output_embeddings().weight, ids, mask)[0]
    return -(logp * mask).sum() / mask.sum().clamp(min=1)
