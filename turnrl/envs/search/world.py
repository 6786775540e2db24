"""A seeded fictional world (people, organisations, cities, countries, years) and its documents.

Invariant: ``build_world(seed, size)`` is a pure function of its arguments (string-seeded
``random.Random``, no hash-order dependence), so every process builds the same world, the
same documents in the same order, and the same facts. Every fact ``(subject, relation) ->
value`` is stated in exactly one document of the subject, in that relation's sentence
(``RELATIONS[r].sentence``); nothing else in the corpus uses those sentences. Names are made
of invented syllables (no real-world knowledge answers a question) and shared on purpose:
many people share a first or a last name, organisations share a name word, and "gathering"
documents mention entities without stating any fact; these are the distractors.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache

import msgspec


class WorldSize(msgspec.Struct, frozen=True, kw_only=True):
    countries: int = 40
    cities: int = 600
    organisations: int = 1500
    people: int = 8000
    gatherings: int = 6000


class Document(msgspec.Struct, frozen=True):
    title: str
    text: str


class Relation(msgspec.Struct, frozen=True):
    subject: str  # entity kind
    value: str  # entity kind, or "year"
    sentence: str  # "{s} ... {v}." - the only way the corpus states this fact
    phrase: str  # noun phrase for the value, "{x}" the subject ("" for years)
    question: str  # question asking for the value of "{x}"
    query: str  # words a searcher adds to the subject's name


RELATIONS: dict[str, Relation] = {
    "birth_year": Relation(
        "person", "year", "{s} was born in the year {v}.", "", "In what year was {x} born?", "born year"
    ),
    "birth_city": Relation(
        "person",
        "city",
        "{s} was born in the city of {v}.",
        "the birthplace of {x}",
        "In which city was {x} born?",
        "born city",
    ),
    "employer": Relation(
        "person",
        "organisation",
        "{s} spent a whole career working for {v}.",
        "the organisation {x} worked for",
        "Which organisation did {x} work for?",
        "career working for",
    ),
    "mentor": Relation(
        "person",
        "person",
        "{s} was a student of {v}.",
        "the teacher of {x}",
        "Who was the teacher of {x}?",
        "student of",
    ),
    "founded": Relation(
        "organisation", "year", "{s} was founded in {v}.", "", "In what year was {x} founded?", "founded"
    ),
    "founder": Relation(
        "organisation",
        "person",
        "{s} was established by {v}.",
        "the founder of {x}",
        "Who founded {x}?",
        "established by",
    ),
    "headquarters": Relation(
        "organisation",
        "city",
        "{s} has its headquarters in {v}.",
        "the headquarters city of {x}",
        "In which city is {x} headquartered?",
        "headquarters",
    ),
    "country": Relation(
        "city",
        "country",
        "{s} is a city in the country of {v}.",
        "the country of {x}",
        "In which country is {x}?",
        "city country",
    ),
    "settled": Relation(
        "city", "year", "{s} was first settled in {v}.", "", "In what year was {x} first settled?", "first settled"
    ),
}

_ONSETS = [
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "gr",
    "kr",
    "tr",
    "th",
    "sh",
    "st",
    "fl",
    "pl",
]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "ia"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "nd", "rk", "x"]
_ORG_KINDS = [
    "Institute",
    "Company",
    "Guild",
    "Press",
    "Works",
    "Bank",
    "Foundry",
    "Orchestra",
    "Society",
    "Academy",
    "Observatory",
    "Shipyard",
]
_OCCUPATIONS = [
    "cartographer",
    "engineer",
    "archivist",
    "botanist",
    "composer",
    "merchant",
    "physician",
    "surveyor",
    "weaver",
    "astronomer",
    "printer",
    "clockmaker",
    "translator",
    "chemist",
]
_HOBBIES = ["sailing", "chess", "falconry", "painting", "beekeeping", "fencing", "poetry", "rowing"]
_KNOWN_FOR = ["bridges", "markets", "canals", "libraries", "festivals", "orchards", "lighthouses", "mills"]


@dataclass
class World:
    """Entities by kind, facts, documents and the reverse index of facts."""

    seed: int
    size: WorldSize
    entities: dict[str, list[str]] = field(default_factory=dict)  # kind -> names
    kind_of: dict[str, str] = field(default_factory=dict)  # name -> kind
    facts: dict[tuple[str, str], str] = field(default_factory=dict)  # (subject, relation) -> value
    holders: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (relation, value) -> subjects
    documents: list[Document] = field(default_factory=list)

    def relations_of(self, kind: str) -> list[str]:
        return [name for name, rel in RELATIONS.items() if rel.subject == kind]


class _Namer:
    """Invented words; every word used once per pool, pools disjoint."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int, suffix: str = "") -> str:
        while True:
            parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables)]
            candidate = ("".join(parts) + self.rng.choice(_CODAS) + suffix).capitalize()
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate

    def pool(self, count: int, syllables: tuple[int, ...], suffixes: tuple[str, ...] = ("",)) -> list[str]:
        return [self.word(self.rng.choice(syllables), self.rng.choice(suffixes)) for _ in range(count)]


def _unique(rng: random.Random, count: int, make) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        name = make()
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _sentence(relation: str, subject: str, value: str) -> str:
    return RELATIONS[relation].sentence.format(s=subject, v=value)


def build_world(seed: int = 0, size: WorldSize | None = None) -> World:
    size = size or WorldSize()
    for name in ("countries", "cities", "organisations", "people"):
        if getattr(size, name) < 4:
            raise ValueError(f"size.{name} must be at least 4, got {getattr(size, name)}")
    rng = random.Random(f"turnrl-search-world:{seed}")
    namer = _Namer(rng)
    world = World(seed=seed, size=size)
    countries = namer.pool(size.countries, (2, 3), ("ia", "land", "mark", ""))
    cities = namer.pool(size.cities, (2, 3), ("", "", "ford", "holm", "port", "wick"))
    org_words = namer.pool(max(4, size.organisations // 2), (2, 3))
    first_names = namer.pool(max(8, size.people // 20), (2,))
    last_names = namer.pool(max(size.people // 9, 2 * size.people // len(first_names) + 8), (2, 3))  # 2x names
    organisations = _unique(rng, size.organisations, lambda: f"{rng.choice(org_words)} {rng.choice(_ORG_KINDS)}")
    people = _unique(rng, size.people, lambda: f"{rng.choice(first_names)} {rng.choice(last_names)}")
    world.entities = {"country": countries, "city": cities, "organisation": organisations, "person": people}
    world.kind_of = {name: kind for kind, names in world.entities.items() for name in names}

    facts = world.facts
    for city in cities:
        facts[city, "country"] = rng.choice(countries)
        facts[city, "settled"] = str(rng.randint(700, 1750))
    for org in organisations:
        facts[org, "founded"] = str(rng.randint(1820, 1990))
        facts[org, "founder"] = rng.choice(people)
        facts[org, "headquarters"] = rng.choice(cities)
    for person in people:
        facts[person, "birth_year"] = str(rng.randint(1780, 1995))
        facts[person, "birth_city"] = rng.choice(cities)
        facts[person, "employer"] = rng.choice(organisations)
        facts[person, "mentor"] = next(p for p in iter(lambda: rng.choice(people), None) if p != person)
    for (subject, relation), value in facts.items():
        world.holders.setdefault((relation, value), []).append(subject)

    docs = world.documents
    for country in countries:
        listed = ", ".join(rng.sample(cities, 3))
        docs.append(Document(country, f"{country} is a country of the northern coast. Travellers visit {listed}."))
    for city in cities:
        docs.append(
            Document(
                city,
                f"{_sentence('country', city, facts[city, 'country'])} "
                f"It has about {rng.randint(2, 900) * 1000} inhabitants.",
            )
        )
        docs.append(
            Document(
                city,
                f"{_sentence('settled', city, facts[city, 'settled'])} "
                f"{city} is known for its {rng.choice(_KNOWN_FOR)}.",
            )
        )
    for org in organisations:
        kind = org.rsplit(" ", 1)[1].lower()
        docs.append(
            Document(
                org, f"{org} is a {kind} of some renown. {_sentence('headquarters', org, facts[org, 'headquarters'])}"
            )
        )
        docs.append(
            Document(
                org,
                f"{_sentence('founded', org, facts[org, 'founded'])} "
                f"{_sentence('founder', org, facts[org, 'founder'])}",
            )
        )
    for person in people:
        first = person.split(" ", 1)[0]
        docs.append(
            Document(
                person,
                f"{_sentence('birth_year', person, facts[person, 'birth_year'])} "
                f"{_sentence('birth_city', person, facts[person, 'birth_city'])} "
                f"As a child {first} loved {rng.choice(_HOBBIES)}.",
            )
        )
        occupation = rng.choice(_OCCUPATIONS)
        article = "an" if occupation[0] in "aeiou" else "a"
        docs.append(
            Document(
                person,
                f"{person} worked as {article} {occupation}. "
                f"{_sentence('employer', person, facts[person, 'employer'])}",
            )
        )
        docs.append(
            Document(
                person,
                f"{_sentence('mentor', person, facts[person, 'mentor'])} "
                f"In later life {first} lived in {rng.choice(cities)}.",
            )
        )
    for _ in range(size.gatherings):
        a, b = rng.sample(people, 2)
        city, org = rng.choice(cities), rng.choice(organisations)
        docs.append(
            Document(
                f"Gathering in {city}",
                f"{a} and {b} met in {city} at an evening hosted by {org}. "
                f"They talked about {rng.choice(_KNOWN_FOR)} and {rng.choice(_HOBBIES)}.",
            )
        )
    return world


@lru_cache(maxsize=4)
def cached_world(seed: int = 0, size: WorldSize | None = None) -> World:
    """The world for ``(seed, size)``, built once per process."""
    return build_world(seed, size)
