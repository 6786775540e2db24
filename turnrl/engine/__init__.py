"""The engine: generation, rollout, training, evaluation and run records, one sub-package each.

Imports run down: ``training`` > ``eval`` > ``rollout`` / ``records`` > ``generation``; the map of every module is
``turnrl/engine/README.md``.
"""
