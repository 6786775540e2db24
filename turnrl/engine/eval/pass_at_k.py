"""Avg@k and Pass@k over sampled episodes, per task category and overall.

Invariant: every task weighs the same. For a task with ``n`` sampled episodes of
which ``c`` succeeded, Avg@k is ``c / n`` (the mean success of its samples) and
Pass@k is the unbiased estimate of "at least one of k samples succeeds",
``1 - C(n - c, k) / C(n, k)`` (exactly the share with a success when ``n == k``);
a category's figure is the mean over its tasks, the overall one the mean over all.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that k of the n samples, drawn without replacement, include one of the c successes."""
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def task_counts(records: Iterable[Mapping]) -> dict[tuple[str, int], tuple[str, int, int]]:
    """``(split, item_id) -> (category, n, c)`` from per-episode records (``split``, ``item_id``, ``category``,
    ``success``)."""
    counts: dict[tuple[str, int], list] = {}
    for r in records:
        entry = counts.setdefault((r["split"], r["item_id"]), [r["category"], 0, 0])
        if entry[0] != r["category"]:
            raise ValueError(f"item {r['item_id']} is recorded under two categories: {entry[0]!r}, {r['category']!r}")
        entry[1] += 1
        entry[2] += bool(r["success"])
    return {key: (cat, n, c) for key, (cat, n, c) in counts.items()}


def summarize_at_k(records: Iterable[Mapping], k: int) -> dict[str, dict]:
    """``{category: {"tasks", "episodes", "avg@k", "pass@k"}}`` plus the ``"overall"`` row; every task needs at least
    ``k`` episodes."""
    per_category: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for (_, item), (category, n, c) in task_counts(records).items():
        if n < k:
            raise ValueError(f"item {item} has {n} episodes, fewer than k={k}")
        per_category[category].append((n, c))
    if not per_category:
        raise ValueError("no episode records to summarize")

    def row(tasks: list[tuple[int, int]]) -> dict:
        return {
            "tasks": len(tasks),
            "episodes": sum(n for n, _ in tasks),
            "avg@k": statistics.fmean(c / n for n, c in tasks),
            "pass@k": statistics.fmean(pass_at_k(n, c, k) for n, c in tasks),
        }

    table = {category: row(tasks) for category, tasks in sorted(per_category.items())}
    table["overall"] = row([t for tasks in per_category.values() for t in tasks])
    return table


def markdown_table(table: Mapping[str, Mapping], k: int) -> str:
    lines = [f"| category | tasks | episodes | Avg@{k} | Pass@{k} |", "|---|---:|---:|---:|---:|"]
    for category, row in table.items():
        name = f"**{category}**" if category == "overall" else category
        lines.append(f"| {name} | {row['tasks']} | {row['episodes']} | {row['avg@k']:.3f} | {row['pass@k']:.3f} |")
    return "\n".join(lines) + "\n"
