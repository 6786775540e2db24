"""The learner's side of SGLang's weight-update group: a process group of its own, tensors broadcast in buckets.

Invariants:
- the group is built the way SGLang's servers build theirs (``init_weights_update_group``): a TCP rendezvous at
  ``tcp://address:port`` where rank 0 (the learner) hosts the store, the store prefixed with the group's name, a
  process group outside the default one (so an FSDP learner's own group is untouched);
- ``buckets`` keeps the tensors' order, puts each in exactly one bucket of at most ``bucket_bytes`` (a larger
  tensor alone in its own), and orders a bucket's tensors by element size, largest first, so every tensor starts
  at a byte offset its dtype divides (SGLang's ``flattened_bucket`` refuses an unaligned one);
- ``flatten`` lays a bucket's tensors end to end as bytes, in the bucket's order: exactly what a receiver that
  allocates from the same names, dtypes and shapes reconstructs.
"""

from __future__ import annotations

import math
import socket
from datetime import timedelta

import torch

GROUP_NAME = "weight_update_group"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def join_weight_group(
    address: str, port: int, rank: int, world_size: int, *, backend: str, group_name: str = GROUP_NAME, timeout_s=300
):
    """Join (rank 0: host) the weight-update group; blocks until all ``world_size`` ranks have joined."""
    from torch.distributed import distributed_c10d as c10d

    timeout = timedelta(seconds=timeout_s)
    store, rank, world_size = next(c10d.rendezvous(f"tcp://{address}:{port}", rank, world_size, timeout=timeout))
    store.set_timeout(timeout)
    group, _ = c10d._new_process_group_helper(
        world_size,
        rank,
        [],
        c10d.Backend(backend),
        c10d.PrefixStore(group_name, store),
        group_name=group_name,
        timeout=timeout,
    )
    c10d._world.pg_group_ranks[group] = {i: i for i in range(world_size)}
    return group


def leave_weight_group(group) -> None:
    import torch.distributed as dist

    dist.destroy_process_group(group)


def buckets(tensors: list[tuple[str, torch.Tensor]], bucket_bytes: int) -> list[list[tuple[str, torch.Tensor]]]:
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    out: list[list[tuple[str, torch.Tensor]]] = []
    current: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > bucket_bytes:
            out.append(current)
            current, size = [], 0
        current.append((name, tensor))
        size += nbytes
    if current:
        out.append(current)
    return [sorted(bucket, key=lambda item: -item[1].element_size()) for bucket in out]


def metadata(bucket: list[tuple[str, torch.Tensor]]) -> dict:
    """The names, dtypes and shapes a receiver allocates the bucket from (SGLang's request fields)."""
    return {
        "names": [name for name, _ in bucket],
        "dtypes": [str(t.dtype).removeprefix("torch.") for _, t in bucket],
        "shapes": [list(t.shape) for _, t in bucket],
    }


def flatten(bucket: list[tuple[str, torch.Tensor]], device: torch.device | str) -> torch.Tensor:
    parts = [t.detach().to(device).contiguous().reshape(-1).view(torch.uint8) for _, t in bucket]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.uint8, device=device)


def unflatten(flat: torch.Tensor, names: list[str], dtypes: list[str], shapes: list[list[int]]) -> dict:
    """The receiver's side of ``flatten`` (used by tests and tools that play a server)."""
    kinds = [getattr(torch, dtype) for dtype in dtypes]
    sizes = [
        math.prod(shape) * torch.empty((), dtype=kind).element_size() for kind, shape in zip(kinds, shapes, strict=True)
    ]
    if sum(sizes) != flat.numel():
        raise ValueError(f"bucket holds {flat.numel()} bytes, the metadata describes {sum(sizes)}")
    tensors, offset = {}, 0
    for name, kind, shape, nbytes in zip(names, kinds, shapes, sizes, strict=True):
        tensors[name] = flat[offset : offset + nbytes].view(kind).reshape(shape)
        offset += nbytes
    return tensors


def broadcast(group, flat: torch.Tensor) -> None:
    import torch.distributed as dist

    dist.broadcast(flat, src=0, group=group)
