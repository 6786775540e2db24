"""The house rules: imports only run down the rooms, config leaves stay light, public class names are unique."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "turnrl"

# Rooms from the bottom up. A module may import its own room and any room on a lower line; rooms that share a
# line are siblings and may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("turnrl.errors",),
    ("turnrl.protocol",),
    ("turnrl.config",),
    ("turnrl.kernels",),
    ("turnrl.algorithms", "turnrl.models", "turnrl.envs"),
    ("turnrl.engine.generation",),
    ("turnrl.engine.rollout", "turnrl.engine.records"),
    ("turnrl.engine.eval",),
    ("turnrl.engine.training",),
    ("turnrl.engine.distributed",),
    (
        "turnrl.rollout_engine",
        "turnrl.recipes",
        "turnrl.viewer",
        "turnrl.cli_progress",
        "turnrl.agentgym_eval",
        "turnrl.bench",
    ),
    ("turnrl.integrations",),  # adapters into other trainers (TRL), over RolloutEngine
    ("turnrl.cli",),
    ("turnrl",),  # the package's own __init__ (lazy re-exports)
]


def room_of(module: str) -> str:
    rooms = sorted((room for layer in LAYERS for room in layer), key=len, reverse=True)
    for room in rooms:
        if module == room or module.startswith(room + "."):
            return room
    raise AssertionError(f"{module} is in no room: add it to LAYERS")


def rank_of(room: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if room in layer)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every turnrl module the file imports, at any depth (function-level and TYPE_CHECKING imports count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return [(line, name) for line, name in found if name == "turnrl" or name.startswith("turnrl.")]


def climbing_imports(files: list[Path]) -> list[str]:
    bad = []
    for path in files:
        source_room = room_of(module_name(path))
        for line, target in imported_modules(path):
            target_room = "turnrl" if target == "turnrl" else room_of(target)
            if target_room == source_room:
                continue
            if rank_of(target_room) >= rank_of(source_room):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {source_room} imports {target}")
    return bad


def test_no_import_climbs():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50
    assert climbing_imports(files) == []


def test_the_checker_catches_a_climb(tmp_path, monkeypatch):
    # a kernel that imports the training loop, and a sibling import between models and envs
    fake = tmp_path / "turnrl"
    (fake / "kernels").mkdir(parents=True)
    (fake / "models").mkdir()
    (fake / "kernels" / "bad.py").write_text("def f():\n    from turnrl.engine.training import loop\n")
    (fake / "models" / "bad.py").write_text("from turnrl.envs.base import Env\n")
    (fake / "models" / "good.py").write_text("from turnrl.kernels import logprob\nfrom . import bad\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    bad = climbing_imports(sorted(fake.rglob("*.py")))
    assert bad == [
        "turnrl/kernels/bad.py:2: turnrl.kernels imports turnrl.engine.training",
        "turnrl/models/bad.py:1: turnrl.models imports turnrl.envs.base",
    ]


def test_every_module_is_in_a_room():
    for path in PACKAGE.rglob("*.py"):
        room_of(module_name(path))


@pytest.mark.parametrize("module", ["turnrl.config", "turnrl.config.toml_file", "turnrl.errors", "turnrl.protocol"])
def test_leaves_import_without_torch(module):
    code = (
        f"import sys, {module}\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'numpy', 'zmq') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_public_class_names_are_unique():
    where = defaultdict(list)
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(str(path.relative_to(PACKAGE.parent)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}
