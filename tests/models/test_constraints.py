"""Constrained decoding: the allowed next tokens after a prefix, per-position sets, outputs off the constraint."""

from __future__ import annotations

import pytest

from turnrl.models.constraints import allowed_next, constrained_positions


def test_constraints():
    completions = [[5, 6, 7], [5, 8], [9]]
    assert allowed_next(completions, []) == [5, 9]
    assert allowed_next(completions, [5]) == [6, 8]
    assert allowed_next(completions, [5, 8]) == []
    assert constrained_positions(completions, [5, 6, 7]) == [[5, 9], [6, 8], [7]]
    with pytest.raises(ValueError, match="outside"):
        constrained_positions(completions, [5, 7])
