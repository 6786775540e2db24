"""Pass@k: a hand-computed example, brute-force enumeration on random small cases, per-category tables."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import pytest

from turnrl.engine.eval.pass_at_k import markdown_table, pass_at_k, summarize_at_k
from turnrl.envs import get_env_spec


def test_hand_computed():
    # 5 samples, 2 successes, k=2: of the C(5,2)=10 pairs, C(3,2)=3 hold no success -> 7/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # k=1 is the success rate
    assert pass_at_k(5, 2, 4) == 1.0  # any 4 of 5 include one of the 2 successes
    assert pass_at_k(3, 0, 3) == 0.0 and pass_at_k(3, 1, 3) == 1.0  # n == k: at least one success


def _brute_force(outcomes: list[bool], k: int) -> Fraction:
    subsets = list(itertools.combinations(range(len(outcomes)), k))
    return Fraction(sum(any(outcomes[i] for i in s) for s in subsets), len(subsets))


def test_matches_enumeration_on_random_cases():
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 9)
        outcomes = [rng.random() < rng.random() for _ in range(n)]
        k = rng.randint(1, n)
        assert pass_at_k(n, sum(outcomes), k) == pytest.approx(float(_brute_force(outcomes, k)), abs=1e-12)


@pytest.mark.parametrize(
    ("n", "c", "k", "needle"),
    [(4, 5, 2, "c must be"), (4, -1, 2, "c must be"), (4, 2, 0, "k must be"), (4, 2, 5, "k must be")],
)
def test_bad_arguments(n, c, k, needle):
    with pytest.raises(ValueError, match=needle):
        pass_at_k(n, c, k)


def test_table_against_recomputation():
    rng = random.Random(3)
    n, k = 5, 3
    records = []
    for item in range(23):
        p = rng.random()
        category = f"cat-{item % 4}"
        records += [
            {"split": "test", "item_id": item, "category": category, "success": rng.random() < p} for _ in range(n)
        ]
    rng.shuffle(records)
    table = summarize_at_k(records, k)
    by_item: dict[int, list[bool]] = {}
    for r in records:
        by_item.setdefault(r["item_id"], []).append(r["success"])
    for category in {f"cat-{i}" for i in range(4)} | {"overall"}:
        items = [i for i in by_item if category == "overall" or f"cat-{i % 4}" == category]
        assert table[category]["tasks"] == len(items)
        assert table[category]["episodes"] == n * len(items)
        assert table[category]["avg@k"] == pytest.approx(sum(sum(by_item[i]) / n for i in items) / len(items))
        expected = sum(_brute_force(by_item[i], k) for i in items) / len(items)
        assert table[category]["pass@k"] == pytest.approx(float(expected))
    text = markdown_table(table, k)
    assert "| Avg@3 | Pass@3 |" in text and text.count("\n") == 2 + len(table)


def test_table_rejects_bad_records():
    records = [{"split": "test", "item_id": 1, "category": "a", "success": True}] * 2
    with pytest.raises(ValueError, match="fewer than k=3"):
        summarize_at_k(records, 3)
    with pytest.raises(ValueError, match="two categories"):
        summarize_at_k([*records, {"split": "test", "item_id": 1, "category": "b", "success": False}], 1)
    with pytest.raises(ValueError, match="no episode records"):
        summarize_at_k([], 1)


def test_categories_of_each_family():
    babyai, textcraft, sciworld = (get_env_spec(f) for f in ("babyai", "textcraft", "sciworld"))
    assert babyai.category(1_000_003, {"level": "GoToLocal"}) == "GoToLocal"
    assert babyai.category(1_000_003) == "GoToLocal"  # the env's default level
    levels = {babyai.category(i, {"level": "all"}) for i in range(1_000_000, 1_000_040)}
    assert len(levels) == 40  # item i plays AgentGym's level i % 40
    depths = [textcraft.category(i) for i in textcraft.splits.test]
    # AgentGym's 544 goals, shallowest first: the test split spreads over every depth, in that order
    assert depths == sorted(depths) and set(depths) == {"depth-1", "depth-2", "depth-3", "depth-4"}
    assert sciworld.category(0) == "boil" and sciworld.category(4638) == "identify-life-stages-2"
    names = {sciworld.category(i) for i in sciworld.splits.test}
    # the every-23rd test split reaches 22 of the 23 tasks (identify-life-stages-2 has only 10 variations)
    assert len(names) == 22 and "identify-life-stages-2" not in names
