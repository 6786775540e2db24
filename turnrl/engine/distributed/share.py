"""Bytes, and trajectories as msgpack bytes, from one rank to every rank (never pickle).

Invariant: every rank returns the same list, decoded strictly into ``Trajectory`` structs; the bytes travel
as a uint8 tensor after their length, over the job's process group.
"""

from __future__ import annotations

import msgspec
import torch
import torch.distributed as dist

from turnrl.protocol import Trajectory

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[Trajectory])


def broadcast_bytes(data: bytes | None, src: int = 0) -> bytes:
    """Rank ``src`` passes the bytes; the others pass None. Returns them on every rank."""
    if dist.get_rank() == src:
        if data is None:
            raise ValueError("the source rank must pass its bytes")
        payload = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
        size = torch.tensor([payload.numel()], dtype=torch.long)
    else:
        size = torch.zeros(1, dtype=torch.long)
    dist.broadcast(size, src=src)
    if dist.get_rank() != src:
        payload = torch.empty(int(size), dtype=torch.uint8)
    if int(size):
        dist.broadcast(payload, src=src)
    return data if dist.get_rank() == src else payload.numpy().tobytes()


def broadcast_trajectories(trajectories: list[Trajectory] | None, src: int = 0) -> list[Trajectory]:
    """Rank ``src`` passes its trajectories; the others pass None. Returns the list on every rank."""
    if dist.get_rank() == src and trajectories is None:
        raise ValueError("the source rank must pass its trajectories")
    data = broadcast_bytes(_ENCODER.encode(trajectories) if dist.get_rank() == src else None, src)
    return trajectories if dist.get_rank() == src else _DECODER.decode(data)
