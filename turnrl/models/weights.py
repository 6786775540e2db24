"""New weights for a running generator: from a model directory or from named tensors sent as raw bytes.

Invariant: an update either replaces exactly the named parameters/buffers (same names, shapes; values cast to
the model's dtype) or raises ``ValueError`` naming what is wrong and leaves the model untouched. Tensors cross a
process boundary as ``TensorData`` (dtype name, shape, raw bytes), never pickled.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from turnrl.models.loading import check_model_dir
from turnrl.protocol import TensorData

_DTYPES = {
    name: getattr(torch, name)
    for name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
}


def pack_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, TensorData]:
    packed = {}
    for name, tensor in tensors.items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise ValueError(f"tensor {name!r}: dtype {dtype} cannot be sent")
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        packed[name] = TensorData(
            dtype=dtype,
            shape=list(tensor.shape),
            data=flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"",
        )
    return packed


def unpack_tensors(packed: dict[str, TensorData]) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, item in packed.items():
        if item.dtype not in _DTYPES:
            raise ValueError(f"tensor {name!r}: unknown dtype {item.dtype!r}")
        dtype = _DTYPES[item.dtype]
        numel = 1
        for size in item.shape:
            if size < 0:
                raise ValueError(f"tensor {name!r}: negative size in shape {item.shape}")
            numel *= size
        expected = numel * torch.empty((), dtype=dtype).element_size()
        if len(item.data) != expected:
            raise ValueError(
                f"tensor {name!r}: {len(item.data)} bytes for shape {item.shape} {item.dtype}, expected {expected}"
            )
        if expected:
            raw = torch.frombuffer(bytearray(item.data), dtype=torch.uint8)
        else:  # frombuffer refuses an empty buffer
            raw = torch.empty(0, dtype=torch.uint8)
        tensors[name] = raw.view(dtype).reshape(item.shape)
    return tensors


@torch.no_grad()
def load_tensors_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> int:
    """Copy the named tensors into the model; all are checked before any is written. Returns how many."""
    targets = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    for name, tensor in tensors.items():
        if name not in targets:
            raise ValueError(f"tensors: the model has no parameter or buffer named {name!r}")
        if tuple(tensor.shape) != tuple(targets[name].shape):
            raise ValueError(
                f"tensors: {name!r} has shape {tuple(tensor.shape)}, the model's is {tuple(targets[name].shape)}"
            )
    for name, tensor in tensors.items():
        targets[name].copy_(tensor.to(device=targets[name].device, dtype=targets[name].dtype))
    return len(tensors)


def load_directory_into(model: torch.nn.Module, path: str | Path) -> int:
    """Copy the weights of the model saved at ``path`` (same architecture) into ``model``."""
    path = check_model_dir(path)
    source = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=next(model.parameters()).dtype)
    mine, theirs = model.state_dict(), source.state_dict()
    if set(mine) != set(theirs):
        missing, extra = sorted(set(mine) - set(theirs))[:3], sorted(set(theirs) - set(mine))[:3]
        raise ValueError(
            f"path {str(path)!r}: parameter names differ from the served model's (missing {missing}, extra {extra})"
        )
    return load_tensors_into(model, theirs)
