"""Rows of a batch split across ranks by token count.

Invariant: a pure function of the lengths and the number of parts (every rank computes the same split);
every row lands in exactly one part; the longest rows are placed first, each on the part with the fewest
tokens so far (ties to the lowest part), so no rank carries much more than its share.
"""

from __future__ import annotations


def balanced_parts(lengths: list[int], parts: int) -> list[list[int]]:
    """Row indices per part, each part's rows in increasing index order."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if any(n < 0 for n in lengths):
        raise ValueError("lengths must be >= 0")
    load = [0] * parts
    out: list[list[int]] = [[] for _ in range(parts)]
    for row in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        target = min(range(parts), key=lambda p: (load[p], p))
        out[target].append(row)
        load[target] += lengths[row]
    return [sorted(rows) for rows in out]
