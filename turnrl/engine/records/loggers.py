"""Where a run's per-step metrics go: ``metrics.jsonl`` always, TensorBoard when installed, W&B when configured.

Invariant: every row reaches every open sink under its ``step``; ``metrics.jsonl``
is the record (flushed per row) and never depends on the optional sinks; an
optional sink that cannot start is reported once and skipped, it never stops a run.
Only numeric values go to TensorBoard and W&B (strings stay in the JSON rows).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from turnrl.config.records import LoggingConfig
from turnrl.engine.records.metrics import MetricsWriter


def _numeric(row: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "step" and math.isfinite(v)
    }


class MetricsLogger:
    def __init__(self, run_dir: str | Path, config: LoggingConfig | None = None, run_config: dict | None = None):
        config = config or LoggingConfig()
        run_dir = Path(run_dir)
        self.jsonl = MetricsWriter(run_dir / "metrics.jsonl")
        self.tensorboard = None
        self.wandb = None
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the package is optional
                pass
            else:
                self.tensorboard = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if config.wandb_project is not None:
            try:
                import wandb

                self.wandb = wandb.init(
                    project=config.wandb_project,
                    dir=str(run_dir),
                    mode=config.wandb_mode,
                    config=run_config or {},
                    name=run_dir.name,
                    reinit="finish_previous",
                )
            except Exception as exc:  # W&B is optional: report it and keep training
                warnings.warn(f"W&B logging is off: {exc}", stacklevel=2)

    @property
    def sinks(self) -> list[str]:
        return ["jsonl"] + (["tensorboard"] if self.tensorboard else []) + (["wandb"] if self.wandb else [])

    def write(self, row: dict) -> None:
        self.jsonl.write(row)
        values = _numeric(row)
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, global_step=row["step"])
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log(values, step=row["step"])

    def close(self) -> None:
        self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
