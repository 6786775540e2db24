"""Registries of advantage estimators and policy losses: adding one is adding one module.

Invariant: a name maps to exactly one callable; an unknown name is a ``ValueError``
that lists the known ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

ADVANTAGE_ESTIMATORS: dict[str, Callable] = {}
POLICY_LOSSES: dict[str, Callable] = {}


def _register(table: dict[str, Callable], kind: str, name: str) -> Callable[[F], F]:
    def wrap(fn: F) -> F:
        if name in table:
            raise ValueError(f"{kind} {name!r} is already registered")
        table[name] = fn
        return fn

    return wrap


def register_advantage(name: str):
    return _register(ADVANTAGE_ESTIMATORS, "advantage estimator", name)


def register_policy_loss(name: str):
    return _register(POLICY_LOSSES, "policy loss", name)


def _lookup(table: dict[str, Callable], kind: str, name: str) -> Callable:
    import turnrl.algorithms.grpo
    import turnrl.algorithms.policy_loss  # noqa: F401

    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; choose from: {', '.join(sorted(table))}") from None


def get_advantage_estimator(name: str) -> Callable:
    return _lookup(ADVANTAGE_ESTIMATORS, "algorithm", name)


def get_policy_loss(name: str) -> Callable:
    return _lookup(POLICY_LOSSES, "policy loss", name)


def algorithm_names() -> list[str]:
    _lookup(ADVANTAGE_ESTIMATORS, "algorithm", "grpo")
    return sorted(ADVANTAGE_ESTIMATORS)
