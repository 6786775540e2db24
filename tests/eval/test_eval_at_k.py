"""``turnrl eval`` on a fixed tiny checkpoint: its Avg@k / Pass@k are those of the episodes it records."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict

import msgspec
import pytest

from turnrl.config.episode import EpisodeConfig
from turnrl.config.eval import EvalAtKConfig
from turnrl.config.train import EvalConfig, ModelConfig, RolloutConfig
from turnrl.engine.eval.at_k import episode_config, evaluate_at_k, plan_eval
from turnrl.engine.training.loop import Trainer
from turnrl.envs.babyai.levels import agentgym_task
from turnrl.models.loading import save_policy
from turnrl.recipes import demo_config


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turnrl.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture()
def checkpoint(tmp_path, tiny_model, tokenizer):
    return save_policy(tiny_model, tokenizer, tmp_path / "tiny")


def _recompute(episodes: list[dict], k: int) -> dict[str, tuple[float, float, int]]:
    """(Avg@k, Pass@k by enumerating every k-subset of each task's samples, tasks) per category and overall."""
    samples = defaultdict(list)
    category = {}
    for e in episodes:
        samples[e["item_id"]].append(e["success"])
        category[e["item_id"]] = e["category"]
    groups = defaultdict(list)
    for item, outcomes in samples.items():
        subsets = list(itertools.combinations(outcomes, k))
        per_task = (sum(outcomes) / len(outcomes), sum(any(s) for s in subsets) / len(subsets))
        groups[category[item]].append(per_task)
        groups["overall"].append(per_task)
    return {c: (sum(a for a, _ in v) / len(v), sum(p for _, p in v) / len(v), len(v)) for c, v in groups.items()}


def test_cli_numbers_equal_recomputation_from_its_records(tmp_path, checkpoint):
    out = tmp_path / "report.json"
    result = _cli(
        "eval",
        "--model",
        str(checkpoint),
        "--env",
        "babyai",
        "--level",
        "all",
        "--split",
        "test",
        "-k",
        "2",
        "-n",
        "4",
        "--tasks",
        "7",
        "--turn-cap",
        "3",
        "--decoding",
        "constrained",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    episodes = report["episodes"]
    assert (report["k"], report["n"], report["tasks"], report["turn_cap"]) == (2, 4, 7, 3)
    assert report["decoding"] == "valid-action constrained"
    assert sorted(e["item_id"] for e in episodes) == sorted(list(range(1_000_000, 1_000_007)) * 4)
    for e in episodes:
        assert e["category"] == agentgym_task(e["item_id"])[0]  # BabyAI reports per level
        assert 1 <= e["turns"] <= 3 and e["end_reason"] in ("done", "turn_cap")
        assert e["success"] == (e["end_reason"] == "done" and e["reward"] > 0)
    expected = _recompute(episodes, 2)
    assert set(report["table"]) == set(expected)
    for category, (avg, pass_k, tasks) in expected.items():
        row = report["table"][category]
        assert row["tasks"] == tasks and row["episodes"] == 4 * tasks
        assert row["avg@k"] == pytest.approx(avg) and row["pass@k"] == pytest.approx(pass_k)
    markdown = out.with_suffix(".md").read_text()
    overall = report["table"]["overall"]
    assert f"| **overall** | 7 | 28 | {overall['avg@k']:.3f} | {overall['pass@k']:.3f} |" in markdown
    assert markdown.split("\n\n", 1)[1] in result.stdout  # the same table is printed


def test_run_directory_uses_latest_checkpoint_and_its_decoding(tmp_path, checkpoint):
    run = tmp_path / "run"
    base = demo_config("babyai", steps=0, out=str(run), level="GoToObj")
    config = msgspec.structs.replace(
        base,
        model=ModelConfig(path=str(checkpoint)),
        eval=EvalConfig(tasks=2, turn_cap=2),
        rollout=RolloutConfig(
            prompts_per_step=2,
            group_size=2,
            episode=EpisodeConfig(turn_cap=2, max_new_tokens=7, constrain_to_valid_actions=True),
        ),
    )
    Trainer(config).run()
    report = evaluate_at_k(EvalAtKConfig(model=str(run), env="babyai", k=3, tasks=4, temperature=0.0))
    assert report["model"].endswith("checkpoint-000000")
    assert report["decoding"] == "valid-action constrained" and report["turn_cap"] == 2  # the run's eval cap
    assert report["env_options"] == {"level": "GoToObj", "layout": "turnrl"} and set(report["table"]) == {
        "GoToObj",
        "overall",
    }
    by_item = defaultdict(set)
    for e in report["episodes"]:
        by_item[e["item_id"]].add((e["success"], e["turns"], e["end_reason"]))
    assert all(len(v) == 1 for v in by_item.values())  # greedy: the 3 samples of a task are one episode
    row = report["table"]["overall"]
    assert row["avg@k"] == row["pass@k"]


def test_a_free_text_run_trained_beside_its_lists_can_be_evaluated_constrained():
    run = msgspec.to_builtins(demo_config("babyai"))  # the recipe: free text, learn_from_listed_actions
    assert run["rollout"]["episode"]["learn_from_listed_actions"]
    constrained = episode_config(EvalAtKConfig(model="m", decoding="constrained"), run)
    assert constrained.constrain_to_valid_actions and not constrained.learn_from_listed_actions
    free = episode_config(EvalAtKConfig(model="m", decoding="free"), run)
    assert not free.constrain_to_valid_actions and free.learn_from_listed_actions
    assert (free.turn_cap, free.max_new_tokens) == (constrained.turn_cap, constrained.max_new_tokens) == (6, 16)


def test_a_run_is_evaluated_on_its_own_env_unless_told(tmp_path, checkpoint):
    run = tmp_path / "run"
    shutil.copytree(checkpoint, run / "checkpoint-000000")
    (run / "checkpoint-000000" / "trainer_state.json").write_text("{}")
    (run / "latest").write_text("checkpoint-000000")
    (run / "config.json").write_text(json.dumps(msgspec.to_builtins(demo_config("textcraft"))))
    plan = plan_eval(EvalAtKConfig(model=str(run), tasks=3))
    assert plan.config.env == "textcraft" and {t.env for t in plan.tasks} == {"textcraft"}
    assert plan.options == {"max_depth": 1, "list_inventory": False, "show_actions": True}
    assert plan.episode.turn_cap == 6 and plan.episode.max_new_tokens == 32  # the run's eval cap and replies
    report = evaluate_at_k(EvalAtKConfig(model=str(run), tasks=1, temperature=0.0))
    assert report["env"] == "textcraft" and set(report["table"]) == {"depth-1", "overall"}  # TextCraft's categories
    told = plan_eval(EvalAtKConfig(model=str(run), env="babyai", tasks=3))
    assert told.config.env == "babyai" and told.options == {}  # another family: not the run's options
    assert plan_eval(EvalAtKConfig(model=str(checkpoint), tasks=1)).config.env == "babyai"  # a bare model


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"k": 0}, "-k must be >= 1"),
        ({"k": 3, "n": 2}, "-n must be >= k=3"),
        ({"split": "valid"}, "unknown split 'valid'"),
        ({"split": ""}, "--split must name a split"),
        ({"decoding": "beam"}, "--decoding must be"),
        ({"tasks": 0}, "--tasks must be >= 1"),
        ({"turn_cap": 0}, "--turn-cap must be >= 1"),
        ({"temperature": -1.0}, "--temperature must be >= 0"),
        ({"env": "textcraft", "tasks": 101}, "exceeds the 100 items"),
        ({"env": "chess"}, "unknown env 'chess'"),
        ({"options": {"level": "NoSuchLevel"}}, "NoSuchLevel"),
    ],
)
def test_bad_values(changes, needle, checkpoint):
    with pytest.raises(ValueError, match=re.escape(needle)):
        plan_eval(EvalAtKConfig(model=str(checkpoint), **changes))


@pytest.mark.parametrize(
    ("args", "needle"), [(["-k", "3", "-n", "2"], "-n must be >= k=3"), (["--level", "NoSuchLevel"], "NoSuchLevel")]
)
def test_cli_bad_values_in_one_line(args, needle, checkpoint):
    result = _cli("eval", "--model", str(checkpoint), *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("turnrl: error:") and needle in lines[0] and result.stdout == ""


@pytest.mark.parametrize("kind", ["missing", "empty_run"])
def test_bad_model_paths(tmp_path, kind):
    path = tmp_path / "nothing"
    if kind == "empty_run":
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"env": {"family": "babyai"}}))
    result = _cli("eval", "--model", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert ("does not exist" if kind == "missing" else "without a checkpoint") in result.stderr
