"""Where metrics go besides metrics.jsonl: TensorBoard, W&B.

Invariant: a leaf: imports nothing heavier than msgspec; a struct is validated when built (a bad value raises
``ValueError`` naming its key).
"""

from __future__ import annotations

import msgspec

WANDB_MODES = ("offline", "online", "disabled")


class LoggingConfig(msgspec.Struct, frozen=True, kw_only=True):
    tensorboard: bool = True  # write TensorBoard event files under RUN/tensorboard when the package is installed
    wandb_project: str | None = None  # log to W&B under this project (None: no W&B)
    wandb_mode: str = "offline"  # offline runs sync later with `wandb sync RUN/wandb/...`

    def __post_init__(self) -> None:
        if self.wandb_mode not in WANDB_MODES:
            raise ValueError(f"logging.wandb_mode must be one of {', '.join(WANDB_MODES)}, got {self.wandb_mode!r}")
