"""A seeded generator of bad frames for one wire: mutations of that wire's valid messages.

Invariant: the same seed, templates and limits give the same sequence of frames; every frame is bytes built from
one kind of damage (``KINDS``): random bytes, a valid frame cut short, a frame past the wire's size limit, a field
of the wrong type, an extra field, a missing field, a huge string, a huge array, deep nesting, or several payload
parts where one is expected. Some mutations may happen to leave a valid message (a missing field with a default);
the wire decides what a valid one may do (``reject`` re-draws frames a fuzz run must not send, such as a shutdown).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable

KINDS = (
    "random_bytes",
    "truncated",
    "oversized",
    "wrong_type",
    "extra_field",
    "missing_field",
    "huge_string",
    "huge_array",
    "deep_nesting",
    "multipart",
)


def _maps(value, path=()):
    """Every (path, dict) inside ``value``, the root included."""
    if isinstance(value, dict):
        yield path, value
        for key, item in value.items():
            yield from _maps(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _maps(item, (*path, i))


class BadFrames:
    """``templates``: valid messages of the wire as plain dicts; ``encode``: dict -> bytes (msgpack or JSON);
    ``max_bytes``: the wire's size limit (oversized frames are a little past it); ``weights``: relative
    frequency per kind (default 1 each; 0 leaves a kind out)."""

    def __init__(
        self,
        seed: int,
        templates: list[dict],
        encode: Callable[[object], bytes],
        max_bytes: int,
        weights: dict[str, float] | None = None,
        reject: Callable[[bytes], bool] | None = None,
        huge: int = 20_000,
    ):
        if not templates:
            raise ValueError("BadFrames needs at least one valid template")
        self.rng = random.Random(seed)
        self.templates = templates
        self.encode = encode
        self.max_bytes = max_bytes
        self.reject = reject or (lambda frame: False)
        self.huge = huge
        weights = weights or {}
        self.kinds = [k for k in KINDS if weights.get(k, 1.0) > 0]
        self.weights = [weights.get(k, 1.0) for k in self.kinds]

    def _other_value(self):
        return self.rng.choice(
            [
                None,
                True,
                -1,
                2**63 - 1,
                -(2**63),
                3.5,
                float("nan"),
                "",
                "x" * self.rng.randint(1, 40),
                [],
                [1, "a", None],
                {},
                {"k": [1, 2]},
            ]
        )

    def _mutated(self, kind: str) -> object:
        message = copy.deepcopy(self.rng.choice(self.templates))
        maps = list(_maps(message))
        _, target = self.rng.choice(maps)
        keys = list(target)
        key = self.rng.choice(keys) if keys else None
        if kind == "wrong_type" and key is not None:
            target[key] = self._other_value()
        elif kind == "extra_field":
            target[f"extra_{self.rng.randint(0, 999)}"] = self._other_value()
        elif kind == "missing_field" and key is not None:
            del target[key]
        elif kind == "huge_string" and key is not None:
            target[key] = "".join(chr(self.rng.randint(32, 0x2FFF)) for _ in range(64)) * self.rng.randint(
                1, max(1, self.huge // 64)
            )
        elif kind == "huge_array" and key is not None:
            target[key] = [self.rng.randint(-(2**31), 2**31) for _ in range(self.rng.randint(1, self.huge))]
        elif kind == "deep_nesting" and key is not None:
            nested: object = 0
            for _ in range(self.rng.randint(50, 2000)):
                nested = [nested]
            target[key] = nested
        return message

    def frame(self) -> tuple[str, list[bytes]]:
        """One bad frame: its kind and its payload parts (one part except for ``multipart``)."""
        while True:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            parts = self._frame(kind)
            if not self.reject(parts[0]):
                return kind, parts

    def _frame(self, kind: str) -> list[bytes]:
        if kind == "random_bytes":
            return [self.rng.randbytes(self.rng.randint(0, 512))]
        valid = self.encode(copy.deepcopy(self.rng.choice(self.templates)))
        if kind == "truncated":
            return [valid[: self.rng.randint(0, max(0, len(valid) - 1))]]
        if kind == "oversized":
            message = copy.deepcopy(self.rng.choice(self.templates))
            message[f"pad_{self.rng.randint(0, 9)}"] = "p" * (self.max_bytes + self.rng.randint(1, 4096))
            return [self.encode(message)]
        if kind == "multipart":
            return [valid, self.rng.randbytes(self.rng.randint(0, 64))]
        return [self.encode(self._mutated(kind))]
