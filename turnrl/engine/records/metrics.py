"""Run outputs: one JSON row per training step in ``metrics.jsonl``, and the success-curve plot.

Invariant: a row is appended and flushed as soon as its step ends, with its
``step`` number, so a run killed at any point leaves every finished step on disk.
"""

from __future__ import annotations

import json
from pathlib import Path


class MetricsWriter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, row: dict) -> None:
        if "step" not in row:
            raise ValueError("a metrics row needs its 'step'")
        self._file.write(json.dumps(row, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(path: str | Path) -> list[dict]:
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def drop_rows_after(path: str | Path, step: int) -> None:
    """Keep the rows of steps up to ``step`` (a resumed run redoes the later ones)."""
    path = Path(path)
    if path.is_file():
        kept = [row for row in read_metrics(path) if row["step"] <= step]
        path.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in kept), encoding="utf-8")


def plot_success_curve(rows: list[dict], evals: list[dict], path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["train/success_rate"] for r in rows], color="#9bb7d4", label="train success (sampled)")
    if len(rows) >= 5:
        window = 5
        smooth = [
            sum(r["train/success_rate"] for r in rows[max(0, i - window + 1) : i + 1])
            / len(rows[max(0, i - window + 1) : i + 1])
            for i in range(len(rows))
        ]
        ax.plot(steps, smooth, color="#1f5fa8", label="train success (5-step mean)")
    if evals:
        ax.plot(
            [e["step"] for e in evals],
            [e["success_rate"] for e in evals],
            "o-",
            color="#d1495b",
            label=f"held-out success (T={evals[0].get('temperature', 0):g})",
        )
        sampled = [e for e in evals if "sampled_success_rate" in e]
        if sampled:
            ax.plot(
                [e["step"] for e in sampled],
                [e["sampled_success_rate"] for e in sampled],
                "s--",
                color="#edae49",
                label="held-out success (T=1)",
            )
    ax.set_xlabel("training step")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
