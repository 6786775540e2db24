"""Progress hooks of a training run: the command line draws them, tests and libraries ignore them.

Invariant: purely presentational; a run does the same work whatever the reporter does.
"""

from __future__ import annotations


class Reporter:
    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, completed: int, **fields) -> None: ...

    def message(self, text: str) -> None: ...
