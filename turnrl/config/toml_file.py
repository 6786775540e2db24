"""Run configs as TOML files, with ``--set dotted.key=value`` overrides, into the typed ``TrainConfig``.

Invariants: a file or override names only keys the config structs have, with
values of their types; anything else is a ``ValueError`` naming the key's dotted
path (``rollout.group_size``), raised before any work starts. Keys left out keep
their defaults, so ``dump_toml`` followed by ``load`` gives back an equal config.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from turnrl.config.train import TrainConfig, to_dict


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=VALUE`` -> (["a", "b", "c"], value); VALUE is read as a TOML value (``0.28``, ``true``,
    ``[4, 8]``, ``"text"``), and as a bare string when it is not one (``--set env.options.level=GoToObj``)."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(re.fullmatch(r"[A-Za-z0-9_-]+", part) for part in path):
        raise ValueError(f"--set expects KEY=VALUE with a dotted key (e.g. algo.learner.lr=1e-4), got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """A copy of ``data`` with each ``KEY=VALUE`` override set (later ones win)."""
    data = _copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"--set {text!r}: {'.'.join(path[: depth + 1])} is a value, not a table")
            node = child
        node[path[-1]] = value
    return data


def build(data: dict) -> TrainConfig:
    """Validate ``data`` into a ``TrainConfig``: unknown keys, wrong types and bad values name their key."""
    _check_keys(data, TrainConfig, "")
    try:
        return msgspec.convert(data, TrainConfig)
    except msgspec.ValidationError as exc:
        raise ValueError(f"bad config: {_readable(str(exc))}") from None


def load(path: str | Path | None = None, overrides: list[str] = (), base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: all defaults), then the file at ``path``'s keys, then the overrides."""
    data = to_dict(base) if base is not None else {}
    if path is not None:
        data = _merge(data, read_toml(path))
    return build(apply_overrides(data, list(overrides)))


def dump_toml(config: TrainConfig) -> str:
    """The config as TOML (keys whose value is None are left out: they are the defaults of optional keys)."""
    lines: list[str] = []
    _dump_table(to_dict(config), [], lines)
    return "\n".join(lines).strip() + "\n"


# ---- helpers -----------------------------------------------------------------------------------
def _check_keys(data: Any, struct: type, prefix: str) -> None:
    if not isinstance(data, dict):
        return  # msgspec reports the wrong type with its path
    fields = {f.name: f.type for f in msgspec.structs.fields(struct)}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ValueError(f"bad config: unknown key {path!r} (known here: {', '.join(sorted(fields))})")
        kind = fields[key]
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            _check_keys(value, kind, f"{path}.")


def _readable(message: str) -> str:
    """msgspec's ``... - at `$.a.b``` -> ``a.b: ...``."""
    match = re.fullmatch(r"(.*) - at `\$\.?(.*)`", message, flags=re.S)
    return f"{match.group(2)}: {match.group(1)}" if match else message


def _copy(data: dict) -> dict:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def _merge(base: dict, extra: dict) -> dict:
    merged = _copy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _dump_table(table: dict, path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and v is not None}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path and (scalars or not tables):
        lines.append(f"\n[{'.'.join(path)}]")
    lines.extend(f"{key} = {_toml_value(value)}" for key, value in scalars.items())
    for key, value in tables.items():
        _dump_table(value, [*path, key], lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if value == value and abs(value) != float("inf") else _bad_value(value)
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _bad_value(value)


def _bad_value(value: Any) -> str:
    raise ValueError(f"cannot write {value!r} as TOML")
