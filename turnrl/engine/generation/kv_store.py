"""Per-session KV cache of the tokens a multi-turn episode has already been through.

Invariant: an entry holds the keys/values of exactly ``ids`` (per layer
``[kv_heads, len(ids), head_dim]``) computed under weight version ``version``;
it is used only for a request whose input starts with ``ids`` under the same
version, and at least one input token is always recomputed (its logits are
needed). Entries are evicted least recently used when the token budget is full.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass
class SessionKV:
    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    version: int

    @property
    def num_tokens(self) -> int:
        return len(self.ids)


class KVStore:
    def __init__(self, max_tokens: int = 2_000_000):
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        self.max_tokens = max_tokens
        self._entries: OrderedDict[str, SessionKV] = OrderedDict()
        self._tokens = 0
        self.hits = 0
        self.reused_tokens = 0
        self.lookups = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tokens(self) -> int:
        return self._tokens

    def reusable(self, session: str | None, input_ids: list[int], version: int) -> SessionKV | None:
        """The entry to reuse for this request, or None. Never covers the last input token."""
        self.lookups += 1
        if session is None or session not in self._entries:
            return None
        entry = self._entries[session]
        n = entry.num_tokens
        if entry.version != version or n >= len(input_ids) or input_ids[:n] != entry.ids:
            self.drop(session)
            return None
        self._entries.move_to_end(session)
        self.hits += 1
        self.reused_tokens += n
        return entry

    def put(self, session: str, entry: SessionKV) -> None:
        self.drop(session)
        if entry.num_tokens > self.max_tokens:
            return
        self._entries[session] = entry
        self._tokens += entry.num_tokens
        while self._tokens > self.max_tokens:
            _, old = self._entries.popitem(last=False)
            self._tokens -= old.num_tokens

    def drop(self, session: str) -> None:
        old = self._entries.pop(session, None)
        if old is not None:
            self._tokens -= old.num_tokens

    def clear(self) -> None:
        self._entries.clear()
        self._tokens = 0
