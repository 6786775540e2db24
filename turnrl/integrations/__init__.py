"""Adapters that put turnrl's rollouts inside other trainers (each behind an optional extra).

- ``trl``: TRL's ``GRPOTrainer`` trains on turnrl's multi-turn episodes through its ``rollout_func``.

Invariant: importing this package imports no trainer; each adapter imports its trainer when it is used.
"""
