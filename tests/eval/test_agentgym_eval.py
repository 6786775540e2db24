"""``turnrl eval --split agentgym``: the paper's evaluation sets as named splits, our figure in the paper's unit
recomputed from the records, and the whole command on every family with the embedded model on CPU."""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys

import pytest

from turnrl.engine.eval.paper import PAPER, PAPER_OPTIONS, our_figure, paper_table
from turnrl.engine.eval.pass_at_k import summarize_at_k
from turnrl.envs import get_env_spec
from turnrl.envs.babyai.levels import AGENTGYM_LEVELS


def test_every_paper_family_has_its_evaluation_set():
    sizes = {family: len(get_env_spec(family).splits.get("agentgym")) for family in PAPER}
    assert sizes == {"babyai": 90, "textcraft": 100, "sciworld": 200, "web": 38, "search": 100}
    for family in PAPER:
        spec = get_env_spec(family)
        items = list(spec.splits.get("agentgym"))
        assert len(set(items)) == len(items) and min(items) >= 0
        assert "agentgym" in spec.splits.names
    babyai = get_env_spec("babyai")
    levels = {babyai.category(i, PAPER_OPTIONS["babyai"]) for i in babyai.splits.get("agentgym")}
    assert levels == set(AGENTGYM_LEVELS)  # all 40 of AgentGym's levels
    assert not set(babyai.splits.get("agentgym")) & set(range(0, 1_000_000))  # never a training id
    depths = {get_env_spec("textcraft").category(i, {}) for i in get_env_spec("textcraft").splits.get("agentgym")}
    assert depths == {"depth-1", "depth-2", "depth-3", "depth-4"}
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        babyai.splits.get("valid")


def _records(rng: random.Random, family: str, tasks: int, samples: int) -> list[dict]:
    out = []
    for item in range(tasks):
        for sample in range(samples):
            reward = rng.choice([0.0, 0.25, 1.0]) if family == "sciworld" else float(rng.random() < 0.4)
            out.append(
                {"split": "agentgym", "item_id": item, "category": f"c{item % 3}", "sample": sample,
                 "success": reward >= 1.0, "reward": reward, "turns": 1, "end_reason": "done"}
            )  # fmt: skip
    return out


def test_our_figure_is_the_papers_unit_recomputed_from_records():
    rng = random.Random(5)
    reports = {}
    for family in ("babyai", "sciworld"):
        records = _records(rng, family, tasks=7, samples=3)
        reports[family] = {"k": 3, "table": summarize_at_k(records, 3), "episodes": records}
        key = "reward" if family == "sciworld" else "success"
        by_task = [statistics.fmean(float(r[key]) for r in records if r["item_id"] == i) for i in range(7)]
        assert our_figure(records, PAPER[family].metric) == pytest.approx(100 * statistics.fmean(by_task))
    reports["web"] = "did not run: RuntimeError"
    table = paper_table(reports)
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    overall = {line.split("|")[1].strip(" *"): line for line in rows if "overall" in line or "run" in line}
    assert set(overall) == {PAPER[f].name for f in PAPER}  # every family has its row, run or not
    for family in ("babyai", "sciworld"):
        cells = [c.strip() for c in overall[PAPER[family].name].split("|")[1:-1]]
        unit = "score" if family == "sciworld" else "%"
        assert cells[5] == f"{our_figure(reports[family]['episodes'], PAPER[family].metric):.1f} {unit}"
        assert cells[6] == f"{PAPER[family].figure:.1f} {unit}"
        assert cells[3] == f"{reports[family]['table']['overall']['avg@k']:.3f}"
    assert "did not run: RuntimeError" in overall["WebArena"] and "26.0 %" in overall["WebArena"]
    assert "| TextCraft | not run |" in table
    with pytest.raises(ValueError, match="no episode records"):
        our_figure([], "success")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "turnrl.cli", *args], capture_output=True, text=True, timeout=900, check=False
    )


def test_cli_runs_every_family_with_the_embedded_model(tmp_path):
    out = tmp_path / "agentgym.json"
    args = ["--split", "agentgym", "--tasks", "1", "--turn-cap", "1", "--warmup-episodes", "2", "--json", str(out)]
    result = _cli("eval", *args)
    assert result.returncode == 0, result.stderr
    reports = json.loads(out.read_text())
    assert set(reports) == set(PAPER)
    for family, report in reports.items():
        assert isinstance(report, dict), (family, report, result.stderr)  # every family ran
        assert report["split"] == "agentgym" and report["tasks"] == 1 and len(report["episodes"]) == 1
        first = get_env_spec(family).splits.get("agentgym")[0]
        assert report["episodes"][0]["item_id"] == first
        ours = f"{our_figure(report['episodes'], PAPER[family].metric):.1f}"
        row = next(line for line in result.stdout.splitlines() if f"**{PAPER[family].name}**" in line)
        assert ours in row and f"{PAPER[family].figure:.1f}" in row
    assert result.stdout == (tmp_path / "agentgym.md").read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--env", "babyai"], "--model is required"),
        (["--split", "agentgym", "--env", "chess"], "unknown env 'chess'"),
        (["--split", "agentgym", "--warmup-episodes", "0"], "--warmup-episodes must be >= 1"),
        (["--split", "agentgym", "-k", "0"], "-k must be >= 1"),
    ],
)
def test_cli_bad_values_in_one_line(args, needle):
    result = _cli("eval", *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("turnrl: error:"), result.stderr
    assert needle in lines[0]
