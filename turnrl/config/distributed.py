"""How the learner is sharded across processes (FSDP2 under torchrun).

Invariant: a leaf: imports nothing heavier than msgspec; a struct is validated when built (a bad value raises
``ValueError`` naming its key).
"""

from __future__ import annotations

import msgspec

DTYPE_NAMES = ("float32", "bfloat16", "float16")
BACKEND_NAMES = ("gloo", "nccl")


class ShardingConfig(msgspec.Struct, frozen=True, kw_only=True):
    backend: str = "gloo"  # "nccl" on GPUs
    # Mixed precision: parameters are all-gathered (and the forward runs) in ``param_dtype``; gradients are
    # reduced in ``reduce_dtype``; the sharded master copy and the optimizer state stay in float32.
    param_dtype: str = "float32"
    reduce_dtype: str = "float32"
    activation_checkpointing: bool = False  # recompute each decoder layer's activations in the backward pass
    reshard_after_forward: bool = True  # free gathered parameters after each layer's forward (ZeRO-3)

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"sharding.backend must be one of {', '.join(BACKEND_NAMES)}, got {self.backend!r}")
        for key in ("param_dtype", "reduce_dtype"):
            if getattr(self, key) not in DTYPE_NAMES:
                raise ValueError(f"sharding.{key} must be one of {', '.join(DTYPE_NAMES)}, got {getattr(self, key)!r}")
