"""Constrained decoding to a set of allowed completions (valid-action masking).

Invariant: after a prefix ``p`` of the output, the allowed next tokens are exactly
``{c[len(p)] for c in completions if c starts with p and is longer than p}``; the
sampler and the learner both use this function, so the restricted distribution a
token was sampled from is the one its log-prob is recomputed under.
"""

from __future__ import annotations


def allowed_next(completions: list[list[int]], prefix: list[int]) -> list[int]:
    n = len(prefix)
    return sorted({c[n] for c in completions if len(c) > n and c[:n] == prefix})


def next_token_shares(completions: list[list[int]], prefix: list[int]) -> dict[int, float]:
    """The share of ``completions`` continuing ``prefix`` with each next token: the next-token distribution of a
    player that picks one completion uniformly (a completion listed twice counts twice). Empty if none does."""
    n = len(prefix)
    counts: dict[int, int] = {}
    for c in completions:
        if len(c) > n and c[:n] == prefix:
            counts[c[n]] = counts.get(c[n], 0) + 1
    total = sum(counts.values())
    return {token: count / total for token, count in sorted(counts.items())}


def check_completions(completions: list[list[int]]) -> None:
    if not completions:
        raise ValueError("allowed completions must not be empty")
    if any(len(c) == 0 for c in completions):
        raise ValueError("an allowed completion is empty")


def constrained_positions(completions: list[list[int]], output: list[int]) -> list[list[int]]:
    """Allowed token sets for every position of ``output`` (which must follow the constraint; it may stop early)."""
    sets, left_at = listed_positions(completions, output)
    if left_at is not None and left_at < len(output):
        raise ValueError(f"token {output[left_at]} at position {left_at} is outside the allowed completions")
    return sets


def listed_positions(completions: list[list[int]], output: list[int]) -> tuple[list[list[int]], int | None]:
    """For an ``output`` sampled freely beside a list of ``completions``: the allowed token sets of the positions
    it spent on the list, and the position where it left the list (None if it never left).

    An output that follows the list to its end returns one set per position and None; one that leaves it at
    position ``k`` returns the sets of positions ``0..k`` (the last one names what would have stayed on the list)
    and ``k``; one that stops early, still on the list but no completion's end, returns its sets and ``len(output)``
    (no set for that position: nothing of it can be trained towards the list)."""
    sets: list[list[int]] = []
    for i, token in enumerate(output):
        allowed = allowed_next(completions, output[:i])
        sets.append(allowed)
        if token not in allowed:
            return sets, i
    if output not in completions:
        return sets, len(output)
    return sets, None
