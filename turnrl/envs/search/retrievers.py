"""Pluggable retrievers: ``query -> top-k passages``, behind a small registry.

Invariant: ``search(queries, topk)`` returns one list per query, each at most ``topk``
``Passage``s, best first; the same query over the same corpus returns the same passages.
Built in: ``bm25`` (``bm25s`` over the world's documents, built in-process) and ``http``
(a retrieval server speaking Search-R1's ``/retrieve`` shape, e.g. a dense Wikipedia index):

    POST {url}  {"queries": ["q1", ...], "topk": k, "return_scores": false}
    ->          {"result": [[{"contents": "\\"Title\\"\\ntext", ...}, ...], ...]}

Each hit may also be wrapped as ``{"document": {"contents": ...}, "score": s}`` (the shape
with ``return_scores: true``); ``contents`` is the title in double quotes, a newline, the
text (a hit with ``title``/``text`` fields instead is read too).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import msgspec

from turnrl.envs.search.world import Document


class Passage(msgspec.Struct, frozen=True):
    title: str
    text: str

    @property
    def contents(self) -> str:
        """Search-R1's corpus form: the title in double quotes, a newline, the text."""
        return f'"{self.title}"\n{self.text}'

    @classmethod
    def from_contents(cls, contents: str) -> Passage:
        title, _, text = contents.partition("\n")
        return cls(title=title.strip().strip('"'), text=text.strip())


class Retriever(ABC):
    @abstractmethod
    def search(self, queries: Sequence[str], topk: int) -> list[list[Passage]]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def _check(queries: Sequence[str], topk: int) -> None:
    if isinstance(queries, str):
        raise ValueError("queries must be a sequence of strings, not one string")
    if not all(isinstance(q, str) for q in queries):
        raise ValueError("queries must all be strings")
    if not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive int, got {topk!r}")


class BM25Retriever(Retriever):
    """Okapi BM25 (``bm25s``) over documents indexed as "title text", English stopwords removed."""

    def __init__(self, documents: Sequence[Document]) -> None:
        import bm25s
        from bm25s.tokenization import Tokenizer

        if not documents:
            raise ValueError("documents must not be empty")
        self.documents = list(documents)
        self.tokenizer = Tokenizer(stopwords="english")
        ids = self.tokenizer.tokenize([f"{d.title} {d.text}" for d in self.documents], show_progress=False)
        self.index = bm25s.BM25()
        self.index.index(ids, show_progress=False)

    def search(self, queries: Sequence[str], topk: int) -> list[list[Passage]]:
        _check(queries, topk)
        if not queries:
            return []
        k = min(topk, len(self.documents))
        ids = self.tokenizer.tokenize(list(queries), update_vocab=False, show_progress=False)
        hits, scores = self.index.retrieve(ids, k=k, show_progress=False)
        return [
            [
                Passage(self.documents[i].title, self.documents[i].text)
                for i, score in zip(row, row_scores, strict=True)
                if score > 0
            ]
            for row, row_scores in zip(hits.tolist(), scores.tolist(), strict=True)
        ]


class HTTPRetriever(Retriever):
    """A retrieval server in Search-R1's ``/retrieve`` shape (see the module docstring)."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        self.url = url
        self.client = httpx.Client(timeout=timeout_s)

    def search(self, queries: Sequence[str], topk: int) -> list[list[Passage]]:
        _check(queries, topk)
        if not queries:
            return []
        response = self.client.post(self.url, json={"queries": list(queries), "topk": topk, "return_scores": False})
        if response.status_code != 200:
            raise RuntimeError(f"retriever at {self.url} answered {response.status_code}: {response.text[:200]}")
        result = response.json().get("result")
        if not isinstance(result, list) or len(result) != len(queries):
            raise RuntimeError(f"retriever at {self.url} returned no 'result' list with one entry per query")
        return [[_passage(hit) for hit in hits[:topk]] for hits in result]

    def close(self) -> None:
        self.client.close()


def _passage(hit: dict) -> Passage:
    doc = hit.get("document", hit) if isinstance(hit, dict) else None
    if isinstance(doc, dict) and isinstance(doc.get("contents"), str):
        return Passage.from_contents(doc["contents"])
    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
        return Passage(title=str(doc.get("title", "")), text=doc["text"])
    raise RuntimeError(f"retriever hit has neither 'contents' nor 'text': {str(hit)[:200]}")


RetrieverFactory = Callable[..., Retriever]  # (documents, **options) -> Retriever
_RETRIEVERS: dict[str, RetrieverFactory] = {
    "bm25": lambda documents, **options: BM25Retriever(documents, **options),
    "http": lambda documents, **options: HTTPRetriever(**options),
}


def register_retriever(name: str, factory: RetrieverFactory) -> None:
    """Add a retriever: ``factory(documents, **options)``; ``documents`` is the world's corpus."""
    if name in _RETRIEVERS:
        raise ValueError(f"retriever {name!r} is already registered")
    _RETRIEVERS[name] = factory


def make_retriever(name: str, documents: Sequence[Document], **options) -> Retriever:
    try:
        factory = _RETRIEVERS[name]
    except KeyError:
        raise ValueError(f"unknown retriever {name!r}; choose from: {', '.join(sorted(_RETRIEVERS))}") from None
    return factory(documents, **options)
