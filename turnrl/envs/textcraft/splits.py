"""TextCraft's task splits and its depth cap, as pure functions of the item id.

Invariant: the test split is the 100 ids ``i * 544 // 100`` (every depth, 1 to 4), the train
split the other 444; ``capped_item`` never moves an id out of its split, so the splits stay
disjoint under any depth cap, and it depends on nothing but its arguments (the same id gives
the same goal in any process).
"""

from __future__ import annotations

from functools import cache

NUM_ITEMS = 544
TEST = tuple(i * NUM_ITEMS // 100 for i in range(100))
TRAIN = tuple(sorted(set(range(NUM_ITEMS)) - set(TEST)))


@cache
def _shallow_and_deep(depths: tuple[int, ...], max_depth: int, test: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    ids = TEST if test else TRAIN
    return tuple(i for i in ids if depths[i] <= max_depth), tuple(i for i in ids if depths[i] > max_depth)


def capped_item(item: int, max_depth: int, depths: tuple[int, ...]) -> int:
    """The id an episode of ``item`` plays under a depth cap (``depths[i]``: the recipe depth of id ``i``'s goal).

    An id whose goal is at most ``max_depth`` deep plays itself. A deeper id plays a shallow id of its own
    split: the ``k mod n``-th of the split's ids of depth ``<= max_depth`` (in id order; ``n`` of them),
    ``k`` being its rank among the split's deeper ids. So every shallow id of a split is played about equally
    often when the split's ids are drawn uniformly.
    """
    if len(depths) != NUM_ITEMS:
        raise ValueError(f"expected the depths of {NUM_ITEMS} goals, got {len(depths)}")
    if not 0 <= item < NUM_ITEMS:
        raise ValueError(f"item must be in [0, {NUM_ITEMS}), got {item}")
    if max_depth < 1:
        raise ValueError(f"max_depth must be >= 1, got {max_depth}")
    if depths[item] <= max_depth:
        return item
    shallow, deep = _shallow_and_deep(depths, max_depth, item in TEST)
    return shallow[deep.index(item) % len(shallow)]
