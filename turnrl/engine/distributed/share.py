"""Trajectories from one rank to every rank, as msgpack bytes (never pickle).

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


def broadcast_trajectories(trajectories: list[Trajectory] | None, src: int = 0) -> list[Trajectory]:
    """Rank ``src`` passes its trajectories; the others pass None. Returns the list on every rank."""
    if dist.get_rank() == src:
        if trajectories is None:
            raise ValueError("the source rank must pass its trajectories")
        payload = torch.frombuffer(bytearray(_ENCODER.encode(trajectories)), dtype=torch.uint8)
        size = torch.tensor([payload.numel()], dtype=torch.long)
    else:
        size = torch.zeros(1, dtype=torch.long)
    dist.broadcast(size, src=src)
    if dist.get_rank() != src:
        payload = torch.empty(int(size), dtype=torch.uint8)
    dist.broadcast(payload, src=src)
    return trajectories if dist.get_rank() == src else _DECODER.decode(payload.numpy().tobytes())
