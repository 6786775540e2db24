"""The learning benchmarks' configurations: every suite task and every schedule builds a valid run config."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import msgspec
import pytest

from turnrl.engine.rollout.curriculum import TurnCapSchedule
from turnrl.engine.training.warmup import random_episodes
from turnrl.envs import get_env_spec
from turnrl.envs.babyai import BabyAIEnv

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


suite = _load("learning_suite")
scaling_inter = _load("scaling_inter")


@pytest.mark.parametrize("task", suite.SUITE, ids=lambda t: t.name)
def test_every_suite_task_is_free_text_from_the_embedded_model(task, tmp_path):
    config = suite.task_config(task, tmp_path, seed=3, quick=False)
    assert config.env.family == task.env
    assert not config.rollout.episode.constrain_to_valid_actions
    assert config.model.path is None  # its own base, warmed up on its own family
    assert config.out == str(tmp_path / task.name) and config.seed == 3
    if task.steps is not None:
        assert config.steps == task.steps
    quick = suite.task_config(task, tmp_path, seed=3, quick=True)
    assert (quick.steps, quick.eval.tasks, quick.model.default.warmup.episodes) == (2, 10, 32)


def test_suite_levels_need_their_turn_caps(tmp_path):
    by_name = {t.name: suite.task_config(t, tmp_path, 0, False) for t in suite.SUITE}
    pickup, put_next = by_name["unlockpickup"], by_name["putnextlocal"]
    assert pickup.env.options["level"] == "UnlockPickup" and put_next.env.options["level"] == "PutNextLocalS6N4"
    for config in (pickup, put_next):  # BabyAI's published cap, and a warm-up that plays it whole
        assert config.rollout.episode.turn_cap == config.eval.turn_cap == config.model.default.warmup.turn_cap == 20
    assert put_next.model.default.warmup.episodes == 2 * pickup.model.default.warmup.episodes
    assert by_name["search-1hop"].env.options["hops"] == 1
    unlocklocal, two_doors = by_name["unlocklocal"], by_name["opentwodoors"]
    assert unlocklocal.rollout.episode.turn_cap == unlocklocal.eval.turn_cap == 8
    assert two_doors.env.options["level"] == "OpenTwoDoors" and two_doors.eval.turn_cap == 10
    for config in (unlocklocal, two_doors, pickup, put_next):
        assert not config.rollout.constrained_at(1)  # free text throughout
        assert config.model.default.warmup.reply_targets == "listed"
        assert config.algo.learner.off_list_log_prob == "even"


def test_the_shortest_listed_win_wins_and_random_play_never_wins_in_fewer_actions():
    env = BabyAIEnv(level="UnlockLocal", layout="turnrl")
    item = get_env_spec("babyai").splits.test[3]
    win = suite.shortest_listed_win(env, item, limit=6)
    assert win is not None and len(win) >= 2
    env.reset_sync(item)
    results = [env.step_sync(env.format_reply(action)) for action in win]
    assert results[-1].done and results[-1].info["success"] and not any(r.done for r in results[:-1])
    assert suite.shortest_listed_win(env, item, limit=len(win) - 1) is None
    played = [e for seed in range(40) for e in random_episodes(env, [item], 8, seed)]
    wins = [len(e.replies) for e in played if e.success]
    assert wins and min(wins) >= len(win)  # an independent search: uniform random play over the same lists


@pytest.mark.parametrize("steps", [3, 30, 61])
def test_schedules_run_their_caps_at_equal_steps(steps):
    schedules = scaling_inter.schedules(4, 12, steps)
    assert len(schedules) == 4
    caps = {
        name: [TurnCapSchedule(c, "babyai", 12).cap(s) for s in range(1, steps + 1)] for name, c in schedules.items()
    }
    assert set(caps["fixed_4"]) == {4} and set(caps["fixed_12"]) == {12}
    staged = caps["scaling_inter_4_8_12"]
    assert staged == sorted(staged) and staged[0] == 4 and staged[-1] == 12
    assert caps["adaptive_4_8_12"][0] == 4  # adaptive starts small and moves only on what it observes


def test_spread_of_seeds():
    out = scaling_inter.spread([0.5, 0.7, 0.6])
    assert out["mean"] == pytest.approx(0.6) and out["std"] == pytest.approx(0.1)
    assert (out["min"], out["max"]) == (0.5, 0.7)
    assert scaling_inter.spread([0.4])["std"] == 0.0


def _result(schedules: dict[str, list[float]], steps: int = 45) -> dict:
    return {
        "task": "babyai Open",
        "steps": steps,
        "large_cap": 12,
        "small_cap": 4,
        "heldout_tasks": 100,
        "seeds": [0, 1],
        "schedules": {
            name: {
                "final": scaling_inter.spread(finals),
                "rl_seconds": scaling_inter.spread([10.0] * len(finals)),
                "seeds": {str(i): {"final_success": f} for i, f in enumerate(finals)},
            }
            for name, finals in schedules.items()
        },
    }


def test_results_run_side_by_side_merge_into_one(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_result({"fixed_4": [0.2, 0.3], "fixed_12": [0.5, 0.1]})))
    b.write_text(json.dumps(_result({"adaptive_4_8_12": [0.4, 0.6]})))
    merged = scaling_inter.merge([a, b])
    assert list(merged["schedules"]) == ["fixed_4", "fixed_12", "adaptive_4_8_12"]
    assert merged["schedules"]["adaptive_4_8_12"]["final"]["mean"] == pytest.approx(0.5)
    assert merged["seeds"] == [0, 1] and merged["steps"] == 45


def test_merge_refuses_a_different_run_or_a_schedule_twice(tmp_path):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(_result({"fixed_4": [0.2]})))
    b.write_text(json.dumps(_result({"fixed_12": [0.2]}, steps=60)))
    c.write_text(json.dumps(_result({"fixed_4": [0.3]})))
    with pytest.raises(ValueError, match="different run"):
        scaling_inter.merge([a, b])
    with pytest.raises(ValueError, match="in two of the files"):
        scaling_inter.merge([a, c])


def _suite_result(tasks: dict[str, float], seed: int = 0) -> dict:
    return {"seed": seed, "quick": False, "decoding": "free text", "tasks": {n: {"gain": g} for n, g in tasks.items()}}


def test_suite_subsets_merge_in_order_and_refuse_a_different_run_or_a_task_twice(tmp_path):
    a, b, c, d = (tmp_path / f"{n}.json" for n in "abcd")
    a.write_text(json.dumps(_suite_result({"gotolocal": 0.5, "textcraft": 0.0})))
    b.write_text(json.dumps(_suite_result({"putnextlocal": 0.3})))
    c.write_text(json.dumps(_suite_result({"putnextlocal": 0.3}, seed=1)))
    d.write_text(json.dumps(_suite_result({"textcraft": 0.1})))
    merged = suite.merge([a, b])
    assert list(merged["tasks"]) == ["gotolocal", "textcraft", "putnextlocal"]
    assert merged["tasks"]["putnextlocal"]["gain"] == 0.3 and merged["seed"] == 0
    with pytest.raises(ValueError, match="different run"):
        suite.merge([a, c])
    with pytest.raises(ValueError, match="in two of the files"):
        suite.merge([a, d])


def test_the_random_listed_player_wins_as_often_as_its_winning_choices_predict(tmp_path):
    """At a cap of one turn, the player wins a task with the share of its listed actions that win at once; that
    share is found independently, by trying every listed action from a fresh reset."""
    gotolocal = next(t for t in suite.SUITE if t.name == "gotolocal")
    config = suite.task_config(gotolocal, tmp_path, seed=0, quick=False)
    config = msgspec.structs.replace(config, eval=msgspec.structs.replace(config.eval, tasks=120, turn_cap=1))
    env = BabyAIEnv(**config.env.options)
    expected = []
    for item in get_env_spec("babyai").splits.test[:120]:
        env.reset_sync(item)
        actions = env.valid_actions_sync()
        wins = 0
        for action in actions:
            env.reset_sync(item)
            wins += env.step_sync(env.format_reply(action)).info["success"]
        expected.append(wins / len(actions))
    share = sum(expected) / len(expected)
    assert 0.05 < share < 0.5  # some tasks are won at once, most need more turns
    played = [suite.random_listed_success(config, seed) for seed in range(1, 6)]
    assert len(set(played)) > 1  # the seed is the player's
    assert abs(sum(played) / len(played) - share) < 0.056  # 4 standard errors over 600 games
