"""Registry of environment families: adding one is adding one module that registers itself.

Invariant: a family name maps to exactly one factory ``(**options) -> Env`` and
one ``TaskSplits`` describing its fixed train/test item ids; ``category(item_id,
options)`` names the group an item is reported under (BabyAI level, TextCraft
recipe depth, SciWorld task), a pure function of the id and the env options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from turnrl.envs.base import Env


@dataclass(frozen=True)
class TaskSplits:
    """Fixed, documented item ids per split: a ``range`` (half-open ``[start, stop)``, maybe strided) or
    another fixed sequence of ids (e.g. the complement of a strided test range). ``named`` holds further
    evaluation sets by name (``agentgym``: the AgentGym-RL paper's evaluation set of the family)."""

    train: Sequence[int]
    test: Sequence[int]
    named: Mapping[str, Sequence[int]] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return ("train", "test", *self.named)

    def get(self, split: str) -> Sequence[int]:
        if split == "train":
            return self.train
        if split == "test":
            return self.test
        if split in self.named:
            return self.named[split]
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(map(repr, self.names))}")


@dataclass(frozen=True)
class EnvSpec:
    family: str
    factory: Callable[..., Env]
    splits: TaskSplits
    default_turn_cap: int
    description: str = ""
    categorize: Callable[[int, Mapping], str] | None = None

    def category(self, item_id: int, options: Mapping | None = None) -> str:
        """The reporting category of ``item_id`` under env ``options`` (the family name when it has none)."""
        if self.categorize is None:
            return self.family
        return self.categorize(item_id, options or {})


_ENVS: dict[str, EnvSpec] = {}


def register_env(spec: EnvSpec) -> EnvSpec:
    if spec.family in _ENVS:
        raise ValueError(f"env family {spec.family!r} is already registered")
    _ENVS[spec.family] = spec
    return spec


def _load_builtin() -> None:
    # Importing the family packages registers them.
    import turnrl.envs.babyai
    import turnrl.envs.sciworld
    import turnrl.envs.search
    import turnrl.envs.textcraft
    import turnrl.envs.web  # noqa: F401


def env_names() -> list[str]:
    _load_builtin()
    return sorted(_ENVS)


def get_env_spec(family: str) -> EnvSpec:
    _load_builtin()
    try:
        return _ENVS[family]
    except KeyError:
        raise ValueError(f"unknown env {family!r}; choose from: {', '.join(sorted(_ENVS))}") from None


def make_env(family: str, **options) -> Env:
    return get_env_spec(family).factory(**options)
