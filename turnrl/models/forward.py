"""The policy's forward pass for training: hidden states, and log-probs/entropies on chosen tokens only.

Invariant: the log-prob of token ``t`` is computed from the hidden state at ``t - 1`` and the LM head runs only
on the positions asked for (the fused kernel, never full-vocabulary logits for every position); a token sampled
under a constraint gets the log-prob of the distribution renormalised over the tokens allowed there, exactly as
the sampler drew it. A token recorded beside a list it left (``constraint_set_target``) gets instead the log-prob
that the token at its position lies in the allowed set at all (the mass of the list there, or with ``"even"`` that
mass with the allowed logits at their mean); that log-prob of the allowed set is also returned for every
constrained position, for a loss that keeps free text on the list everywhere.
"""

from __future__ import annotations

import torch

from turnrl.config.algo import OFF_LIST_LOG_PROBS
from turnrl.kernels import linear_logprob_entropy


def hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is not None:
        return decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return out.hidden_states[-1]


def token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int = 2048,
    constraint_index: torch.Tensor | None = None,
    constraint_allowed: torch.Tensor | None = None,
    constraint_set_target: torch.Tensor | None = None,
    set_log_prob: str = "mass",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Log-probs and entropies [B, T] at the tokens ``loss_mask`` marks (0 elsewhere), and the log-prob [M] that
    each constrained position's token lies in its allowed set (``allowed_set_log_prob``; None without constraints).

    ``constraint_index`` [M, 2] (row, position) and ``constraint_allowed`` [M, K] (-1 padded) name tokens that
    were sampled from a distribution restricted to the allowed ids; theirs are recomputed the same way. Where
    ``constraint_set_target`` [M] (bool) is set, the log-prob is that of the allowed set (its entropy stays the
    full distribution's); ``set_log_prob`` says which log-prob of the set (see ``allowed_set_log_prob``)."""
    hidden = hidden_states(model, input_ids, attention_mask)
    weight = model.get_output_embeddings().weight
    return logprobs_from_hidden(
        hidden,
        weight,
        input_ids,
        loss_mask,
        temperature,
        chunk_rows,
        constraint_index,
        constraint_allowed,
        constraint_set_target,
        set_log_prob,
    )


def logprobs_from_hidden(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    input_ids: torch.Tensor,
    loss_mask: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int = 2048,
    constraint_index: torch.Tensor | None = None,
    constraint_allowed: torch.Tensor | None = None,
    constraint_set_target: torch.Tensor | None = None,
    set_log_prob: str = "mass",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``token_logprobs`` from hidden states already computed (``weight``: the LM head's [V, H])."""
    predict_from = loss_mask[:, 1:]  # hidden at t-1 predicts token t
    rows = hidden[:, :-1][predict_from]
    targets = input_ids[:, 1:][predict_from]
    logp, entropy = linear_logprob_entropy(rows, weight, targets, temperature, chunk_rows=chunk_rows)
    logp_full = torch.zeros(loss_mask.shape, dtype=torch.float32, device=logp.device)
    ent_full = torch.zeros_like(logp_full)
    full_mask = torch.zeros_like(loss_mask)
    full_mask[:, 1:] = predict_from
    logp_full = logp_full.masked_scatter(full_mask, logp)
    ent_full = ent_full.masked_scatter(full_mask, entropy)
    if constraint_index is None:
        return logp_full, ent_full, None
    rows, cols = constraint_index[:, 0], constraint_index[:, 1]
    targets = input_ids[rows, cols]
    lp_c, ent_c, set_c = restricted_logprob_entropy(
        hidden[rows, cols - 1],
        weight,
        targets,
        constraint_allowed,
        temperature,
        constraint_set_target,
        set_log_prob,
    )
    logp_full = logp_full.index_put((rows, cols), lp_c)
    if constraint_set_target is not None:
        ent_c = torch.where(constraint_set_target, ent_full[rows, cols], ent_c)
    ent_full = ent_full.index_put((rows, cols), ent_c)
    return logp_full, ent_full, set_c


def restricted_logprob_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    allowed: torch.Tensor,
    temperature: float,
    set_target: torch.Tensor | None = None,
    set_log_prob: str = "mass",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-prob of ``targets`` and entropy under softmax restricted to ``allowed`` ids (-1 = padding), and the
    log-prob of the whole allowed set under the unrestricted softmax (``allowed_set_log_prob``); where
    ``set_target`` is set, the first is the set's log-prob instead."""
    logits = (hidden.float() @ weight.float().t()) / temperature
    valid = allowed >= 0
    picked = logits.gather(1, allowed.clamp(min=0)).masked_fill(~valid, float("-inf"))
    logz = torch.logsumexp(picked, dim=-1)
    probs = torch.softmax(picked, dim=-1)
    entropy = logz - (probs * picked.masked_fill(~valid, 0.0)).sum(-1)
    target = logits.gather(1, targets[:, None]).squeeze(1)
    logp = target - logz
    logp_set = allowed_set_log_prob(logits, allowed, set_log_prob)
    if set_target is not None:
        logp = torch.where(set_target, logp_set, logp)
    return logp, entropy, logp_set


def allowed_set_log_prob(logits: torch.Tensor, allowed: torch.Tensor, how: str = "mass") -> torch.Tensor:
    """The log-prob [M] that the next token lies in ``allowed`` [M, K] (-1 padded) under the full softmax of
    ``logits`` [M, V]. ``"mass"`` is the set's probability (its gradient raises each allowed logit in proportion
    to that token's probability, so it also sharpens the odds among them); ``"even"`` is the probability the set
    would have with the allowed logits all at their mean (its gradient raises them all by the same amount: the
    odds among them stay)."""
    if how not in OFF_LIST_LOG_PROBS:
        raise ValueError(f"set_log_prob must be one of {', '.join(OFF_LIST_LOG_PROBS)}, got {how!r}")
    valid = allowed >= 0
    picked = logits.gather(1, allowed.clamp(min=0)).masked_fill(~valid, float("-inf"))
    if how == "mass":
        return torch.logsumexp(picked, dim=-1) - torch.logsumexp(logits, dim=-1)
    count = valid.sum(-1)
    listed = (picked.masked_fill(~valid, 0.0).sum(-1) / count) + torch.log(count.float())
    members = torch.where(valid, allowed, allowed[:, :1])  # padding repeats a real member
    unlisted = logits.scatter(1, members, float("-inf"))
    return listed - torch.logaddexp(listed, torch.logsumexp(unlisted, dim=-1))


def expected_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    index: torch.Tensor,
    target_ids: torch.Tensor,
    target_shares: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``sum_k share_k * log p(id_k)`` [M] at each position ``index`` [M, 2] (row, position) of a token, predicted
    from the hidden state before it: the negated cross-entropy to a target distribution over ``target_ids``
    [M, K] (-1 padded; ``target_shares`` [M, K] sum to 1 over the real ids) instead of to the token written."""
    rows, cols = index[:, 0], index[:, 1]
    if bool((cols < 1).any()):
        raise ValueError("a target position needs a token before it to be predicted from")
    logits = (hidden[rows, cols - 1].float() @ weight.float().t()) / temperature
    logp = torch.log_softmax(logits, dim=-1)
    real = target_ids >= 0
    picked = logp.gather(1, target_ids.clamp(min=0))
    return (picked * target_shares * real).sum(-1)
