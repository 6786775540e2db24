"""Questions over the world: item id -> a 1-4 hop question whose gold answer the generator computes.

Invariant: ``make_question(world, item_id)`` is a pure function (string-seeded RNG per
item), so the same id gives the same question in any process. A question is a set of
chains (a start entity and the relations to follow from it, one hop per relation) and a
way to combine the chains' final values: ``value`` (bridge: the one chain's value),
``earliest`` (comparison: the start whose final year is smallest; years differ) or
``count`` (aggregation: how many chains end at ``target``). ``hops`` is the total number
of relations followed; every hop is answerable from one document.

``make_question(world, item_id, hops)`` restricts the family to bridge questions of exactly
``hops`` hops (``None``: the default 1-4 hop mix above). Single-hop (``hops=1``) item ``i`` is
the ``i``-th (subject, relation) pair of every fact of a person, organisation or city, in an
order shuffled once per world by a string-seeded RNG: distinct ids give distinct questions, so
disjoint id ranges (the train and test splits) hold disjoint questions; an id past the number
of such facts raises ``ValueError``. ``hops`` 2-4 draw a bridge chain per item as the mix does.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

import msgspec

from turnrl.envs.search.world import RELATIONS, World

Combine = Literal["value", "earliest", "count"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five"]


class Chain(msgspec.Struct, frozen=True):
    start: str
    relations: tuple[str, ...]


class Question(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    answers: tuple[str, ...]  # gold answers: the first is canonical
    kind: Literal["bridge", "comparison", "aggregation", "external"]
    hops: int
    chains: tuple[Chain, ...]
    combine: Combine
    target: str = ""


def follow(world: World, chain: Chain) -> str:
    """The value at the end of ``chain`` in ``world``."""
    value = chain.start
    for relation in chain.relations:
        value = world.facts[value, relation]
    return value


def _phrase(start: str, relations: tuple[str, ...]) -> str:
    text = start
    for relation in relations:
        text = RELATIONS[relation].phrase.format(x=text)
    return text


def _bridge(world: World, rng: random.Random, hops: int) -> Question:
    while True:
        kind = "person" if hops > 1 else rng.choice(["person", "organisation", "city"])
        start = rng.choice(world.entities[kind])
        relations: list[str] = []
        while len(relations) < hops:
            choices = world.relations_of(kind)
            if len(relations) < hops - 1:  # an inner hop must lead to an entity with relations of its own
                choices = [r for r in choices if world.relations_of(RELATIONS[r].value)]
            if not choices:
                break
            relation = rng.choice(choices)
            relations.append(relation)
            kind = RELATIONS[relation].value
        if len(relations) == hops:
            break
    chain = Chain(start, tuple(relations))
    text = RELATIONS[relations[-1]].question.format(x=_phrase(start, chain.relations[:-1]))
    return Question(
        text=text, answers=(follow(world, chain),), kind="bridge", hops=hops, chains=(chain,), combine="value"
    )


_COMPARISONS = [
    ("person", ("birth_year",), "Who was born earlier, {a} or {b}?"),
    ("organisation", ("founded",), "Which was founded earlier, {a} or {b}?"),
    ("person", ("mentor", "birth_year"), "Whose teacher was born earlier, {a}'s or {b}'s?"),
    ("person", ("employer", "founded"), "Whose employer was founded earlier, {a}'s or {b}'s?"),
]


def _comparison(world: World, rng: random.Random) -> Question:
    kind, relations, template = rng.choice(_COMPARISONS)
    while True:
        a, b = rng.sample(world.entities[kind], 2)
        chains = (Chain(a, relations), Chain(b, relations))
        years = [int(follow(world, c)) for c in chains]
        if years[0] != years[1]:
            break
    winner = a if years[0] < years[1] else b
    return Question(
        text=template.format(a=a, b=b),
        answers=(winner,),
        kind="comparison",
        hops=2 * len(relations),
        chains=chains,
        combine="earliest",
    )


def _aggregation(world: World, rng: random.Random) -> Question:
    relation = rng.choice(["birth_city", "employer"])
    count = rng.choice([3, 4])
    anchor = rng.choice(world.entities["person"])
    target = world.facts[anchor, relation]
    same = [p for p in world.holders[relation, target] if p != anchor]
    picked = {anchor, *rng.sample(same, min(len(same), rng.randint(0, count - 1)))}
    while len(picked) < count:
        picked.add(rng.choice(world.entities["person"]))
    people = sorted(picked)
    rng.shuffle(people)
    chains = tuple(Chain(p, (relation,)) for p in people)
    matches = sum(follow(world, c) == target for c in chains)
    listed = ", ".join(people[:-1]) + f" and {people[-1]}"
    verb = "were born in" if relation == "birth_city" else "worked for"
    return Question(
        text=f"How many of {listed} {verb} {target}?",
        answers=(str(matches), NUMBER_WORDS[matches]),
        kind="aggregation",
        hops=count,
        chains=chains,
        combine="count",
        target=target,
    )


HOPS = (1, 2, 3, 4)
SINGLE_HOP_KINDS = ("person", "organisation", "city")
_SINGLE_HOP: dict[tuple, list[tuple[str, str]]] = {}


def check_hops(hops: object) -> int | None:
    """``hops`` validated: None (the 1-4 hop mix) or one of ``HOPS``."""
    if hops is not None and (not isinstance(hops, int) or isinstance(hops, bool) or hops not in HOPS):
        raise ValueError(f"hops must be None (the 1-4 hop mix) or one of {list(HOPS)}, got {hops!r}")
    return hops  # type: ignore[return-value]


def single_hop_facts(world: World) -> list[tuple[str, str]]:
    """Every (subject, relation) fact of a person, organisation or city, in the world's shuffled order."""
    key = (world.seed, world.size)
    if key not in _SINGLE_HOP:
        pairs = [
            (subject, relation)
            for kind in SINGLE_HOP_KINDS
            for subject in world.entities[kind]
            for relation in world.relations_of(kind)
        ]
        random.Random(f"turnrl-search-single-hop:{world.seed}").shuffle(pairs)
        _SINGLE_HOP[key] = pairs
    return _SINGLE_HOP[key]


def _single_hop(world: World, item_id: int) -> Question:
    pairs = single_hop_facts(world)
    if not 0 <= item_id < len(pairs):
        raise ValueError(f"item_id must be in [0, {len(pairs)}) for single-hop questions, got {item_id}")
    start, relation = pairs[item_id]
    chain = Chain(start, (relation,))
    return Question(
        text=RELATIONS[relation].question.format(x=start),
        answers=(follow(world, chain),),
        kind="bridge",
        hops=1,
        chains=(chain,),
        combine="value",
    )


def make_question(world: World, item_id: int, hops: int | None = None) -> Question:
    if check_hops(hops) == 1:
        return _single_hop(world, item_id)
    if hops is not None:
        return _bridge(world, random.Random(f"turnrl-search-question:{world.seed}:{item_id}:hops={hops}"), hops)
    rng = random.Random(f"turnrl-search-question:{world.seed}:{item_id}")
    roll = rng.random()
    if roll < 0.6:
        return _bridge(world, rng, rng.choice([1, 2, 2, 3, 3, 4]))
    if roll < 0.8:
        return _comparison(world, rng)
    return _aggregation(world, rng)


def load_questions(path: str | Path) -> list[Question]:
    """Questions from a JSONL file in Search-R1's data shape, one ``{"question": ..., "golden_answers":
    [...]}`` per line (``"answer": "..."`` is read too); item id ``i`` is line ``i``. For a retriever over
    another corpus (e.g. Wikipedia behind the ``http`` retriever): the generated questions are about the
    generated world only."""
    questions = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            answers = row.get("golden_answers", row.get("answer"))
            answers = [answers] if isinstance(answers, str) else answers
            if not isinstance(row["question"], str) or not answers or not all(isinstance(a, str) for a in answers):
                raise TypeError("needs a 'question' string and 'golden_answers' strings")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"questions_path {path}: line {number} is not a question: {error}") from None
        questions.append(
            Question(text=row["question"], answers=tuple(answers), kind="external", hops=0, chains=(), combine="value")
        )
    if not questions:
        raise ValueError(f"questions_path {path} holds no question")
    return questions
