"""The one environment interface the engine talks to.

Invariant: an env is deterministic given its item id (same id, same first
observation, in any process); ``step`` never raises for a bad action (it answers
with an observation saying what was wrong and costs a turn); ``close`` releases
everything the env holds and is safe to call twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from turnrl.protocol import EnvResult


class Env(ABC):
    """Asynchronous interface used by the engine."""

    family: str = ""
    system_prompt: str = ""

    @abstractmethod
    async def reset(self, item_id: int) -> str:
        """Start the episode for ``item_id``; return the first observation."""

    @abstractmethod
    async def step(self, action_text: str) -> EnvResult:
        """Apply the policy's raw text; return the next observation, reward and done."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    async def valid_actions(self) -> list[str] | None:
        """The actions valid now, if the env can list them (None otherwise)."""
        return None

    def format_reply(self, action: str) -> str:
        """The reply text that performs ``action`` (used for warm-up data and constrained decoding)."""
        return f"Action: {action}"


class BlockingEnv(Env):
    """An env whose work is cheap, blocking Python code.

    Subclasses implement ``reset_sync``/``step_sync``. The async methods run them
    inline; env worker processes call the sync methods directly, so blocking code
    never has to run on the engine's event loop when it is slow.
    """

    @abstractmethod
    def reset_sync(self, item_id: int) -> str: ...

    @abstractmethod
    def step_sync(self, action_text: str) -> EnvResult: ...

    def close_sync(self) -> None:
        pass

    def valid_actions_sync(self) -> list[str]:
        """The actions that are valid now (used for format warm-up and random baselines)."""
        raise NotImplementedError(f"{type(self).__name__} does not list its valid actions")

    async def reset(self, item_id: int) -> str:
        return self.reset_sync(item_id)

    async def step(self, action_text: str) -> EnvResult:
        return self.step_sync(action_text)

    async def close(self) -> None:
        self.close_sync()

    async def valid_actions(self) -> list[str] | None:
        try:
            return self.valid_actions_sync()
        except NotImplementedError:
            return None


def parse_action(text: str, marker: str = "Action:") -> str | None:
    """Return the action written after the last ``marker`` (first line only), or None.

    Matching is case-insensitive on the marker; the action is stripped and
    lower-cased, trailing punctuation removed.
    """
    lowered = text.lower()
    idx = lowered.rfind(marker.lower())
    if idx < 0:
        return None
    rest = text[idx + len(marker) :].strip()
    line = rest.splitlines()[0] if rest else ""
    line = line.strip().strip(".").strip().lower()
    return line or None
