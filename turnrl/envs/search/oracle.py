"""A scripted searcher that follows the question's hop chain through the env's text interface, and a random
baseline.

Invariant: the oracle knows only the question's plan (start entities, relations, how to
combine), never a fact: for each hop it sends ``<search>subject words</search>``, reads the
value out of the returned passages with the relation's sentence pattern, and uses it as
the next subject; so a success proves every hop is retrievable with the env's top-k. The
random player sends queries and answers drawn from the corpus vocabulary.
"""

from __future__ import annotations

import random
import re

from turnrl.envs.search.env import SearchEnv
from turnrl.envs.search.questions import NUMBER_WORDS, Question
from turnrl.envs.search.world import RELATIONS


def _read(relation: str, subject: str, observation: str) -> str | None:
    """The value of ``relation`` for ``subject`` stated in ``observation`` (None if not there)."""
    before, after = RELATIONS[relation].sentence.split("{s}")[1].split("{v}")
    pattern = r"(?<!\w)" + re.escape(subject + before) + r"([^.<\n]+?)" + re.escape(after)
    match = re.search(pattern, observation)
    return match.group(1) if match else None


class SearchOracle:
    """Steps through ``queries`` and ``answer``; ``play`` drives one episode."""

    def __init__(self, env: SearchEnv) -> None:
        self.env = env

    def play(self, item_id: int, turn_cap: int = 20) -> tuple[bool, float, int]:
        """Reset to ``item_id`` and play; returns (success, reward, turns)."""
        self.env.reset_sync(item_id)
        question = self.env.question
        assert question is not None
        turns = 0
        finals: list[str | None] = []
        for chain in question.chains:
            subject: str | None = chain.start
            for relation in chain.relations:
                value = None
                for query in (f"{subject} {RELATIONS[relation].query}", str(subject)):
                    if turns >= turn_cap:
                        return False, 0.0, turns
                    result = self.env.step_sync(f"<search>{query}</search>")
                    turns += 1
                    value = _read(relation, str(subject), result.observation)
                    if value is not None:
                        break
                subject = value
                if subject is None:
                    break
            finals.append(subject)
        if turns >= turn_cap:
            return False, 0.0, turns
        result = self.env.step_sync(f"<answer>{combine(question, finals)}</answer>")
        return bool(result.info["success"]), result.reward, turns + 1


def combine(question: Question, finals: list[str | None]) -> str:
    if question.combine == "value":
        return finals[0] or "unknown"
    if question.combine == "earliest":
        years = [int(v) if v and v.isdigit() else 10**9 for v in finals]
        return question.chains[years.index(min(years))].start
    count = sum(v == question.target for v in finals)
    return str(count) if count >= len(NUMBER_WORDS) else NUMBER_WORDS[count]


def play_random(
    env: SearchEnv, item_id: int, rng: random.Random, turn_cap: int = 10, vocabulary: list[str] | None = None
) -> tuple[bool, float]:
    """Random searches (1-3 corpus words) and random answers (a corpus word or an entity name); half each."""
    words = vocabulary or corpus_vocabulary(env)
    names = [name for names in env.world.entities.values() for name in names]
    env.reset_sync(item_id)
    for _ in range(turn_cap):
        if rng.random() < 0.5:
            reply = "<search>" + " ".join(rng.choices(words, k=rng.randint(1, 3))) + "</search>"
        else:
            reply = f"<answer>{rng.choice(names) if rng.random() < 0.5 else rng.choice(words)}</answer>"
        result = env.step_sync(reply)
        if result.done:
            return bool(result.info["success"]), result.reward
    return False, 0.0


def corpus_vocabulary(env: SearchEnv, sample: int = 5000) -> list[str]:
    """Distinct words of the first ``sample`` documents (sorted: deterministic)."""
    return sorted({w.strip(".,") for d in env.world.documents[:sample] for w in f"{d.title} {d.text}".split()})
