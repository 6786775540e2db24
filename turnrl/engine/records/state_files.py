"""Nested training state as two files that load without pickle: tensors in safetensors, the rest in JSON.

A state is a tree of dicts, lists, tuples, tensors, numpy arrays, bytes, strings, numbers, booleans and None
(an optimizer's ``state_dict``, ``random.getstate()``, ``numpy.random.get_state()``, a torch RNG state).

Invariants:
- ``save_state(stem, tree)`` writes ``<stem>.safetensors`` (every tensor and array, under a key naming its place)
  and ``<stem>.json`` (the rest, each tensor replaced by a reference to its key), each flushed to disk;
- ``load_state(stem)`` returns a tree equal to the one saved, exactly: tuples stay tuples, int keys stay ints,
  floats keep every bit, tensors and arrays keep dtype, shape and values;
- nothing is unpickled: tensors are read by safetensors and the rest by ``json``; a file that is neither, a node
  this module did not write, or a reference to a tensor that is not there is refused with ``CheckpointError``
  naming the file; a value of a type not listed above is refused at save time (``TypeError`` naming its place).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from turnrl.errors import CheckpointError

# JSON objects with one of these keys are this module's own nodes; a plain dict never has a key starting with "$".
_TUPLE, _ITEMS, _TENSOR, _ARRAY, _BYTES = "$tuple", "$items", "$tensor", "$ndarray", "$bytes"
FORMAT = 1


def state_paths(stem: str | Path) -> tuple[Path, Path]:
    stem = Path(stem)
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")


def save_state(stem: str | Path, tree) -> None:
    json_path, tensor_path = state_paths(stem)
    tensors: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()

    def encode(value, where: str):
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if np.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            pointer = tensor.untyped_storage().data_ptr()
            if pointer in seen_storage:  # safetensors refuses two tensors on one storage (tied weights)
                tensor = tensor.clone()
            seen_storage.add(tensor.untyped_storage().data_ptr())
            tensors[where] = tensor
            return {_TENSOR: where}
        if isinstance(value, np.ndarray):
            tensors[where] = torch.from_numpy(np.ascontiguousarray(value).copy())
            return {_ARRAY: where}
        if isinstance(value, bytes):
            return {_BYTES: base64.b64encode(value).decode("ascii")}
        if isinstance(value, list):
            return [encode(v, f"{where}.{i}") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {_TUPLE: [encode(v, f"{where}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: encode(v, f"{where}.{k}") for k, v in value.items()}
            return {
                _ITEMS: [
                    [encode(k, f"{where}.key{i}"), encode(v, f"{where}.{i}")] for i, (k, v) in enumerate(value.items())
                ]
            }
        raise TypeError(f"cannot store {type(value).__name__} at {where!r} without pickle")

    document = {"format": FORMAT, "tree": encode(tree, "$")}
    save_file(tensors, str(tensor_path))
    _fsync(tensor_path)
    with json_path.open("w", encoding="utf-8") as f:
        json.dump(document, f, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())


def load_state(stem: str | Path):
    json_path, tensor_path = state_paths(stem)
    for path in (json_path, tensor_path):
        if not path.is_file():
            raise CheckpointError(f"{path} is missing")
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{json_path} is not JSON ({exc}); checkpoints are read without pickle") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT or "tree" not in document:
        raise CheckpointError(f"{json_path} is not a turnrl state file (format {FORMAT})")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{tensor_path} is not a safetensors file ({exc}); checkpoints hold no pickle") from exc

    def decode(node):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [decode(v) for v in node]
        if not isinstance(node, dict):
            raise CheckpointError(f"{json_path}: unexpected node {node!r}")
        marked = [k for k in node if k.startswith("$")]
        if not marked:
            return {k: decode(v) for k, v in node.items()}
        if len(node) != 1:
            raise CheckpointError(f"{json_path}: a node mixes {marked} with other keys")
        ((mark, body),) = node.items()
        if mark == _TUPLE and isinstance(body, list):
            return tuple(decode(v) for v in body)
        if mark == _ITEMS and isinstance(body, list) and all(isinstance(p, list) and len(p) == 2 for p in body):
            return {decode(k): decode(v) for k, v in body}
        if mark in (_TENSOR, _ARRAY) and isinstance(body, str):
            if body not in tensors:
                raise CheckpointError(f"{json_path} names tensor {body!r}, absent from {tensor_path}")
            return tensors[body] if mark == _TENSOR else tensors[body].numpy()
        if mark == _BYTES and isinstance(body, str):
            return base64.b64decode(body, validate=True)
        if mark == "$float" and body in ("nan", "inf", "-inf"):
            return float(body)
        raise CheckpointError(f"{json_path}: unknown node {mark!r}")

    try:
        return decode(document["tree"])
    except CheckpointError:
        raise
    except (ValueError, TypeError) as exc:  # a bad base64 string, an unhashable key
        raise CheckpointError(f"{json_path}: {exc}") from exc


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
