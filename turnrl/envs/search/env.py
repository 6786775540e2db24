"""Deep Search as a turnrl env: answer a multi-hop question by searching a corpus.

Invariant: item id -> question is a pure function (``make_question`` over the seeded
world), so the same id gives the same first observation ("Question: ...") in any
process. A turn is exactly one tag: ``<search>query</search>`` answers with the top-k
passages as ``<information>Doc 1(Title: ...) text ...</information>`` (Search-R1's
format); ``<answer>text</answer>`` is scored by normalised exact match (reward 1 and
done when right; a wrong answer costs the turn and the episode goes on unless
``end_on_answer``). A turn with no tag, both tags, several tags or an empty or overlong
query/answer changes nothing, says what was wrong and has ``valid = False``.
With ``questions_path`` (a JSONL file of ``question``/``golden_answers``, e.g. for a Wikipedia retriever
behind ``http``) item ``i`` is the file's ``i``-th question instead.
``hops=1`` (or 2-4) restricts the generated questions to bridge questions of that many hops
(``make_question``'s ``hops``; the ids, splits and first observations stay pure functions of the id).
``info``: ``success``, ``score`` (this turn's EM, 0 when not an answer), ``f1`` (this
turn's answer F1), ``valid``, ``action`` (search / answer / invalid), ``item``, ``hops``.

``valid_actions_sync`` lists well-formed actions built from the text the policy has seen
only (see ``spans``), never from the gold answer or the question's chains: a ``<search>``
of the question itself and of every span of the latest returned passages, and an
``<answer>`` of every span of the latest returned passages (an answer is read from
evidence, so before the first search the one listed action is searching the question).
A uniform choice among them teaches the tag format and copying text, with no preference
for the right span; an answer among the candidates is right only when the passages happen
to hold it.
``show_actions=True`` (not Search-R1's) ends every observation of a running episode with
"Available actions:" and the listed actions, one per line.
"""

from __future__ import annotations

import numbers
import re

from turnrl.envs.base import BlockingEnv
from turnrl.envs.search.questions import Question, check_hops, load_questions, make_question
from turnrl.envs.search.retrievers import Passage, Retriever, make_retriever
from turnrl.envs.search.scoring import exact_match, f1_score
from turnrl.envs.search.world import World, WorldSize, cached_world
from turnrl.protocol import EnvResult

SYSTEM_PROMPT = (
    "Answer the question about a fictional world by searching its encyclopedia; its facts are invented, so "
    "search instead of guessing. Each turn you may think first, then write exactly one tag: "
    "<search>query</search> to get the best matching passages back inside <information>...</information>, "
    "or <answer>short answer</answer> to answer (a name, a year or a number). Questions may need several "
    "searches, one fact at a time."
)

NUM_ITEMS = 20_000
TAG = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
MAX_QUERY_CHARS = 500


class SearchEnv(BlockingEnv):
    family = "search"
    system_prompt = SYSTEM_PROMPT

    def __init__(
        self,
        retriever: str | Retriever = "bm25",
        topk: int = 3,
        end_on_answer: bool = False,
        world_seed: int = 0,
        world_size: WorldSize | None = None,
        retriever_options: dict | None = None,
        questions_path: str | None = None,
        hops: int | None = None,
        show_actions: bool = False,
    ) -> None:
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be a positive int, got {topk!r}")
        self.hops = check_hops(hops)
        if not isinstance(show_actions, bool):
            raise ValueError(f"show_actions must be a bool, got {show_actions!r}")
        self.show_actions = show_actions
        if hops is not None and questions_path:
            raise ValueError("hops restricts the generated questions; it does not apply with questions_path")
        self.world: World = cached_world(world_seed, world_size)
        if isinstance(retriever, Retriever):
            self.retriever = retriever
        else:
            self.retriever = _shared_retriever(retriever, self.world, tuple(sorted((retriever_options or {}).items())))
        self.topk = topk
        self.end_on_answer = end_on_answer
        self.external = load_questions(questions_path) if questions_path else None
        self.question: Question | None = None
        self.passages: list[Passage] = []  # the latest search's passages
        self._item = -1
        self._done = True

    def reset_sync(self, item_id: int) -> str:
        count = len(self.external) if self.external else NUM_ITEMS
        if not isinstance(item_id, numbers.Integral) or not 0 <= item_id < count:
            raise ValueError(f"item_id must be an int in [0, {count}), got {item_id!r}")
        if self.external:
            self.question = self.external[item_id]
        else:
            self.question = make_question(self.world, int(item_id), self.hops)
        self._item, self._done, self.passages = int(item_id), False, []
        return self._with_listing(f"Question: {self.question.text}")

    def step_sync(self, action_text: str) -> EnvResult:
        if self._done or self.question is None:
            raise RuntimeError("step() after the episode ended; call reset() first")
        tags = TAG.findall(action_text)
        if not tags:
            return self._invalid(
                "No action found. Write <search>query</search> to search or <answer>answer</answer> to answer."
            )
        if len(tags) > 1:
            return self._invalid(f"Found {len(tags)} tags; write exactly one <search> or <answer> tag per turn.")
        name, content = tags[0][0].lower(), " ".join(tags[0][1].split())
        if not content:
            return self._invalid(f"The <{name}> tag is empty.")
        if len(content) > MAX_QUERY_CHARS:
            return self._invalid(f"The <{name}> text is longer than {MAX_QUERY_CHARS} characters.")
        if name == "search":
            self.passages = self.retriever.search([content], self.topk)[0]
            return self._result(format_passages(self.passages), "search")
        em = exact_match(content, self.question.answers)
        f1 = f1_score(content, self.question.answers)
        self._done = em == 1.0 or self.end_on_answer
        text = "Your answer is correct." if em else "Your answer is wrong." + ("" if self._done else " Try again.")
        return self._result(text, "answer", em, f1)

    def close_sync(self) -> None:
        self._done = True  # the retriever is shared by the process's envs: it stays open

    def format_reply(self, action: str) -> str:
        """Actions are already replies in the parsed tag form (``<search>q</search>``, ``<answer>a</answer>``)."""
        return action

    def valid_actions_sync(self) -> list[str]:
        """Searches of the question and of the latest passages' spans, answers of the passages' spans."""
        if self._done or self.question is None:
            return []
        seen = [f"{p.title}. {p.text}" for p in self.passages]
        found = spans(" ".join(seen))
        question = " ".join(self.question.text.split())[:MAX_QUERY_CHARS]
        searches = dict.fromkeys([question, *found])
        return [f"<search>{s}</search>" for s in searches] + [f"<answer>{s}</answer>" for s in found]

    def _invalid(self, text: str) -> EnvResult:
        return self._result(text, "invalid", valid=False)

    def _result(self, text: str, action: str, em: float = 0.0, f1: float = 0.0, valid: bool = True) -> EnvResult:
        assert self.question is not None
        info = {
            "success": em == 1.0,
            "score": em,
            "f1": f1,
            "valid": valid,
            "action": action,
            "item": self._item,
            "hops": self.question.hops,
        }
        return EnvResult(observation=self._with_listing(text), reward=em, done=self._done, info=info)

    def _with_listing(self, text: str) -> str:
        """With ``show_actions`` and the episode still on, ``text`` then the listed actions one per line (a reply
        is a bare tag, so each line is written exactly as a reply would carry it)."""
        if not self.show_actions or self._done:
            return text
        return "\n".join([text, "Available actions:", *self.valid_actions_sync()])


# capitalised words that start sentences or label text rather than name something
_NOT_NAMES = frozenset(
    [
        "A",
        "An",
        "The",
        "In",
        "On",
        "At",
        "As",
        "Of",
        "It",
        "Its",
        "They",
        "He",
        "She",
        "His",
        "Her",
        "What",
        "Which",
        "Who",
        "Whose",
        "When",
        "Where",
        "How",
        "Why",
        "Was",
        "Were",
        "Is",
        "Did",
        "Does",
        "Do",
        "Doc",
        "Title",
        "Question",
        "Gathering",
        "Travellers",
    ]
)
_CAPITALISED_RUN = re.compile(r"[A-Z][\w'-]*(?:[ ]+[A-Z][\w'-]*)*")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?!\w)")


def spans(text: str) -> list[str]:
    """Candidate names and numbers in ``text``, in order of first appearance, each once: every maximal run of
    capitalised words (leading words of ``_NOT_NAMES`` and a possessive ``'s`` dropped) and every number."""
    found: list[tuple[int, str]] = []
    for match in _CAPITALISED_RUN.finditer(text):
        words = match.group().split()
        while words and words[0] in _NOT_NAMES:
            words.pop(0)
        name = " ".join(words)
        name = name[:-2] if name.endswith("'s") else name
        if name:
            found.append((match.start(), name))
    found += [(match.start(), match.group()) for match in _NUMBER.finditer(text)]
    return list(dict.fromkeys(name for _, name in sorted(found)))


def format_passages(passages: list[Passage]) -> str:
    if not passages:
        return "<information>No passage matches this query.</information>"
    docs = "\n".join(f"Doc {i}(Title: {p.title}) {p.text}" for i, p in enumerate(passages, 1))
    return f"<information>{docs}</information>"


_SHARED: dict[tuple, Retriever] = {}


def _shared_retriever(name: str, world: World, options: tuple) -> Retriever:
    """One retriever per (name, world, options) per process: envs share the index (read-only)."""
    key = (name, world.seed, world.size, options)
    if key not in _SHARED:
        _SHARED[key] = make_retriever(name, world.documents, **dict(options))
    return _SHARED[key]
