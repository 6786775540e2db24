"""The trajectory log and ``turnrl view``: a real run's episodes, opened in a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from turnrl.config.episode import EpisodeConfig
from turnrl.engine.eval.heldout import evaluate
from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.records.metrics import MetricsWriter
from turnrl.engine.records.step_row import batch_metrics
from turnrl.engine.records.trajectory_log import log_trajectories, logged_steps, read_step, step_file
from turnrl.engine.rollout.run import EnvPool, run_episodes
from turnrl.engine.rollout.sampler import TaskSampler, heldout_tasks
from turnrl.envs.babyai import BabyAIEnv
from turnrl.viewer import EPISODES_PER_PAGE, STEPS_PER_PAGE, write_view

CHROMIUM = "/usr/bin/chromium"
MARKUP = "</script><b id='injected'>not markup</b>"


async def _make_run(run: Path, model, tokenizer, chat, steps: int) -> dict[int, list]:
    """A short run's outputs written the way the trainer writes them: metrics rows, trajectory logs, evaluations."""
    generator = LocalGenerator(model, tokenizer.pad_token_id, seed=0)
    pool = EnvPool(lambda: BabyAIEnv("GoToLocal"))
    episode = EpisodeConfig(turn_cap=3, max_new_tokens=7, constrain_to_valid_actions=True)
    sampler = TaskSampler("babyai", range(0, 1000), prompts_per_step=3, group_size=2, seed=0)
    held_out = heldout_tasks("babyai", range(1_000_000, 1_001_000), 3)
    report, _ = await evaluate(held_out, pool, generator, chat, episode)
    evals = [{"step": 0, "success_rate": report.success_rate}]
    metrics = MetricsWriter(run / "metrics.jsonl")
    by_step = {}
    for step in range(1, steps + 1):
        trajectories = await run_episodes(sampler.tasks_for_step(step), pool, generator, chat, episode)
        if step == 2:
            trajectories[0].turns[0].observation += MARKUP  # page text must stay text
        metrics.write({**batch_metrics(step, trajectories), "turn_cap": episode.turn_cap})
        log_trajectories(run, step, trajectories, tokenizer)
        by_step[step] = trajectories
    metrics.close()
    report, _ = await evaluate(held_out, pool, generator, chat, episode)
    evals.append({"step": steps, "success_rate": report.success_rate})
    (run / "summary.json").write_text(json.dumps({"evals": evals}))
    (run / "config.json").write_text(
        json.dumps({"env": {"family": "babyai", "options": {"level": "GoToLocal"}}, "algo": {"name": "grpo"}})
    )
    await pool.close()
    await generator.close()
    return by_step


@pytest.fixture()
async def run(tmp_path, tiny_model, tokenizer, chat):
    run = tmp_path / "run"
    return run, await _make_run(run, tiny_model, tokenizer, chat, steps=3)


def test_log_holds_each_episode_as_text(run):
    run_dir, by_step = run
    assert sorted(logged_steps(run_dir)) == [1, 2, 3]
    for step, trajectories in by_step.items():
        records = read_step(step_file(run_dir, step))
        assert len(records) == len(trajectories) == 6
        for record, trajectory in zip(records, trajectories, strict=True):
            assert (record["item_id"], record["group"]) == (trajectory.task.item_id, trajectory.task.group)
            assert [t["action"] for t in record["turns"]] == [t.action_text for t in trajectory.turns]
            assert [t["observation"] for t in record["turns"]] == [t.observation for t in trajectory.turns]
            assert [t["reward"] for t in record["turns"]] == trajectory.turn_rewards
            assert (record["end_reason"], record["turn_cap"], record["success"]) == (
                trajectory.end_reason,
                trajectory.turn_cap,
                trajectory.success,
            )
            first = BabyAIEnv("GoToLocal").reset_sync(trajectory.task.item_id)
            assert first in record["prompt"] and first.splitlines()[-1] in record["prompt"]  # the first observation
            assert "token_ids" not in record
    with pytest.raises(ValueError, match="step must be >= 0"):
        step_file(run_dir, -1)


def test_page_is_self_contained(run, tmp_path):
    run_dir, _ = run
    page = write_view(run_dir, tmp_path / "view.html").read_text()
    assert "src=" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert page.count('<script type="application/json" id="step-') == 3
    assert "<b id='injected'>" not in page  # the markup is escaped inside its JSON block


def _open(page, path: Path) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: errors.append(f"request {req.url}") if not req.url.startswith("file:") else None)
    page.goto(path.resolve().as_uri())
    return errors


def _browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])


@pytest.fixture(scope="module")
def sync_playwright():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no {CHROMIUM} (scripts/setup.sh installs it)")
    api = pytest.importorskip("playwright.sync_api")
    return api.sync_playwright


def test_episode_opens_in_headless_chromium(run, tmp_path, sync_playwright):
    run_dir, by_step = run
    html = write_view(run_dir, tmp_path / "view.html")
    with sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        errors = _open(page, html)
        assert page.locator("#steps tbody tr").count() == 3
        assert page.locator("#curve polyline.train").count() == 1 and page.locator("#curve circle.eval").count() == 2
        page.click("#steps tr[data-step='2']")
        assert page.locator("#episodes tbody tr").count() == 6
        page.click("#episodes tr[data-episode='0']")
        trajectory = by_step[2][0]
        assert page.locator("#episode .turn").count() == len(trajectory.turns)
        assert page.locator("#episode .end-reason").inner_text() == trajectory.end_reason
        assert page.locator("#episode .turn-cap").inner_text() == str(trajectory.turn_cap)
        observations = page.locator("#episode pre.observation").all_inner_texts()
        assert observations == [t.observation for t in trajectory.turns]
        assert MARKUP in observations[0] and page.locator("#injected").count() == 0
        assert page.evaluate("parsed.size") == 1  # only the opened step's episodes were parsed
        shot = page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
        browser.close()
    assert errors == []
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
    if os.environ.get("TURNRL_VIEWER_SCREENSHOT"):
        shutil.copy(tmp_path / "viewer.png", os.environ["TURNRL_VIEWER_SCREENSHOT"])


def test_long_run_is_paged(run, tmp_path, tokenizer, sync_playwright):
    run_dir, by_step = run
    many = [t for step in by_step.values() for t in step] * 6  # 108 episodes per step
    steps = STEPS_PER_PAGE * 2 + 7
    with (run_dir / "metrics.jsonl").open("w") as f:
        for step in range(1, steps + 1):
            f.write(json.dumps({**batch_metrics(step, many), "turn_cap": 3}) + "\n")
            log_trajectories(run_dir, step, many, tokenizer)
    html = write_view(run_dir, tmp_path / "long.html")
    with sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page()
        errors = _open(page, html)
        assert page.locator("#steps tbody tr").count() == STEPS_PER_PAGE
        page.click("#steps-pager button:text('next')")
        page.click("#steps-pager button:text('next')")
        rows = page.locator("#steps tbody tr")
        assert rows.count() == 7 and rows.first.get_attribute("data-step") == str(2 * STEPS_PER_PAGE + 1)
        page.click(f"#steps tr[data-step='{steps}']")
        assert page.locator("#episodes tbody tr").count() == EPISODES_PER_PAGE
        for _ in range(len(many) // EPISODES_PER_PAGE):
            page.click("#episodes-pager button:text('next')")
        last = len(many) - 1
        assert page.locator("#episodes tbody tr").count() == len(many) % EPISODES_PER_PAGE
        page.click(f"#episodes tr[data-episode='{last}']")
        assert page.locator("#episode pre.action").all_inner_texts() == [t.action_text for t in many[last].turns]
        assert page.evaluate("parsed.size") == 1
        browser.close()
    assert errors == []


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turnrl.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_writes_the_page(run):
    run_dir, _ = run
    result = _cli("view", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert (run_dir / "view.html").is_file() and "view.html" in result.stderr


@pytest.mark.parametrize("kind", ["missing", "not_a_run"])
def test_cli_bad_run_directory(tmp_path, kind):
    path = tmp_path / "x"
    if kind == "not_a_run":
        path.mkdir()
    result = _cli("view", str(path))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("turnrl: error:")
    assert ("does not exist" if kind == "missing" else "not a turnrl run") in lines[0]
