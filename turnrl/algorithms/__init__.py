"""Advantage estimators and policy losses, behind registries."""

from turnrl.algorithms.registry import (
    algorithm_names,
    get_advantage_estimator,
    get_policy_loss,
    register_advantage,
    register_policy_loss,
)

__all__ = [
    "algorithm_names",
    "get_advantage_estimator",
    "get_policy_loss",
    "register_advantage",
    "register_policy_loss",
]
