"""The AgentGym-RL paper's evaluation, as data, and one table of our figures beside its published ones.

Invariants: ``PAPER`` holds the published ScalingInter-7B figures (arXiv 2509.08755; BabyAI, TextCraft,
WebArena and Deep Search as success rates in percent, SciWorld as the mean ScienceWorld score 0-100);
every family here has a named split ``agentgym`` (its evaluation set: ``EnvSpec.splits.get("agentgym")``)
and is evaluated under ``PAPER_OPTIONS`` (BabyAI over AgentGym's 40 levels). Our figure is in the paper's
unit: 100 x Avg@k (the mean success of each task's samples), or for SciWorld 100 x the mean reward (the
score / 100). ``paper_table`` is a pure function of the per-family reports; a family not run is a row
saying so, never a gap.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping

import msgspec


class PaperFigure(msgspec.Struct, frozen=True):
    name: str  # the paper's name of the environment
    figure: float  # ScalingInter-7B, in the paper's unit
    metric: str  # "success" (percent of tasks) or "score" (mean score 0-100)
    tasks: int  # the size of the paper's evaluation set


PAPER: dict[str, PaperFigure] = {
    "babyai": PaperFigure("BabyAI", 96.7, "success", 90),
    "textcraft": PaperFigure("TextCraft", 91.0, "success", 100),
    "sciworld": PaperFigure("SciWorld", 57.0, "score", 200),
    "web": PaperFigure("WebArena", 26.0, "success", 50),
    "search": PaperFigure("Deep Search", 38.2, "success", 100),
}
PAPER_MODEL = "ScalingInter-7B"
PAPER_OPTIONS: dict[str, dict] = {"babyai": {"level": "all"}}


def our_figure(records: list[Mapping], metric: str) -> float:
    """100 x the mean over tasks of each task's mean success (or mean reward for ``score``)."""
    per_task: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        per_task[(r["split"], r["item_id"])].append(float(r["reward"]) if metric == "score" else float(r["success"]))
    if not per_task:
        raise ValueError("no episode records")
    return 100 * statistics.fmean(statistics.fmean(v) for v in per_task.values())


def paper_table(reports: Mapping[str, dict | str]) -> str:
    """A markdown table: per family its categories (Avg@k, Pass@k) and its overall row with our figure beside
    the paper's. ``reports[family]`` is an ``evaluate_at_k`` report, or a string saying why it did not run."""
    k = next((r["k"] for r in reports.values() if isinstance(r, dict)), 1)
    lines = [
        f"| env | category | tasks (paper's) | Avg@{k} | Pass@{k} | ours | paper ({PAPER_MODEL}) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for family, paper in PAPER.items():
        report = reports.get(family, "not run")
        unit = "score" if paper.metric == "score" else "%"
        if not isinstance(report, dict):
            lines.append(f"| {paper.name} | {report} | - ({paper.tasks}) | - | - | - | {paper.figure:.1f} {unit} |")
            continue
        table = report["table"]
        for category, row in table.items():
            if category == "overall":
                continue
            lines.append(
                f"| {paper.name} | {category} | {row['tasks']} | {row['avg@k']:.3f} | {row['pass@k']:.3f} | | |"
            )
        row = table["overall"]
        ours = our_figure(report["episodes"], paper.metric)
        lines.append(
            f"| **{paper.name}** | **overall** | {row['tasks']} ({paper.tasks}) | {row['avg@k']:.3f} | "
            f"{row['pass@k']:.3f} | {ours:.1f} {unit} | {paper.figure:.1f} {unit} |"
        )
    return "\n".join(lines) + "\n"
