"""A benchmark runs as ``python bench/NAME.py``, which puts ``bench/`` first on ``sys.path``: a script named like an
importable module shadows it for every import in that process (transformers imports the ``kernels`` distribution
when it is installed, and found a benchmark instead)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def shadowed_modules(scripts: list[Path]) -> list[str]:
    """The scripts whose stem is also a module importable from outside ``bench/``."""
    clashes = []
    for script in scripts:
        spec = importlib.util.find_spec(script.stem)
        if spec is not None and not (spec.origin or "").startswith(str(BENCH)):
            clashes.append(script.stem)
    return clashes


def test_no_benchmark_shadows_an_importable_module():
    scripts = sorted(BENCH.glob("*.py"))
    assert len(scripts) > 10
    assert shadowed_modules(scripts) == []


def test_the_check_flags_a_clash():
    assert shadowed_modules([BENCH / "json.py", BENCH / "kernel_speed.py"]) == ["json"]
