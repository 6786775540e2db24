"""``turnrl bench rollout``: its JSON, the same tasks in both modes, figures against the planned work, bad input."""

from __future__ import annotations

import asyncio
import json
import random

import numpy as np
import pytest

from turnrl.bench.latency_model import LatencyModelGenerator, SyntheticEnv, Workload, WorkloadConfig
from turnrl.bench.presets import synthetic_episode_config
from turnrl.bench.probe import Probe
from turnrl.bench.run import BenchPlan, EnvSource, median_round, quantiles, run_plan, timeline
from turnrl.cli import main
from turnrl.envs.http.launch import free_port, running_server
from turnrl.envs.registry import get_env_spec
from turnrl.protocol import Task

MODE_KEYS = {
    "wall_s",
    "cpu_s",
    "truncated",
    "episodes_started",
    "episodes_finished",
    "env_steps",
    "tokens",
    "env_steps_per_s",
    "tokens_per_s",
    "generator_busy_share",
    "busy_source",
    "running_batch",
    "running_batch_source",
    "turn_latency_s",
    "generation_s",
    "env_s",
    "max_in_flight",
    "overhead_us_per_step",
    "task_ids",
    "end_reasons",
    "success_rate",
    "timeline",
    "rounds_env_steps_per_s",
}


def test_babyai_json_keys_and_same_tasks_in_both_modes(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    args = ["bench", "rollout", "--env", "babyai", "--episodes", "5", "--concurrency", "2", "--max-turns", "2"]
    rc = main([*args, "--max-new-tokens", "6", "--json", str(out), "--png", str(png)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "async / lock-step" in printed and "lockstep" in printed
    result = json.loads(out.read_text())
    assert {"workload", "config", "episodes", "modes", "async_over_lockstep", "wall_s"} <= set(result)
    assert set(result["modes"]) == {"async", "lockstep"}
    train = get_env_spec("babyai").splits.train
    expected = sorted(int(train[i]) for i in range(5))
    for mode in result["modes"].values():
        assert set(mode) == MODE_KEYS
        assert mode["task_ids"] == expected  # read from the envs' resets, not from the plan
        assert mode["episodes_started"] == mode["episodes_finished"] == 5
        assert not mode["truncated"]
        assert 1 <= mode["max_in_flight"] <= 2
        assert 5 <= mode["env_steps"] <= 10  # turn cap 2
        assert sum(mode["end_reasons"].values()) == 5
        rate = mode["timeline"]["env_steps_per_s"]
        width = mode["timeline"]["bin_s"]
        assert sum(rate) * width == pytest.approx(mode["env_steps"])
        assert mode["timeline"]["in_flight"][-1] == 0
        assert mode["turn_latency_s"]["p50"] >= mode["env_s"]["p50"] >= 0
    ratio = result["modes"]["async"]["env_steps_per_s"] / result["modes"]["lockstep"]["env_steps_per_s"]
    assert result["async_over_lockstep"] == pytest.approx(ratio)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _synthetic_plan(workload: Workload, chat, time_limit_s=None) -> BenchPlan:
    async def generator():
        return LatencyModelGenerator(workload)

    async def envs():
        return lambda: SyntheticEnv(workload)

    return BenchPlan(
        name="synthetic",
        tasks=[Task(env="synthetic", item_id=i, group=i) for i in range(workload.config.episodes)],
        envs=lambda: EnvSource(open=envs),
        generator=generator,
        chat=chat,
        episode=synthetic_episode_config(workload),
        concurrency=workload.config.slots,
        time_limit_s=time_limit_s,
    )


def test_figures_match_the_planned_work(chat):
    workload = Workload(WorkloadConfig(episodes=24, slots=6, max_turns=4, time_scale=0.002, seed=3))
    result = asyncio.run(run_plan(_synthetic_plan(workload, chat)))
    for name, mode in result["modes"].items():
        assert mode["env_steps"] == workload.total_steps, name
        assert mode["tokens"] == workload.total_tokens, name
        assert mode["task_ids"] == list(range(24)), name
        assert mode["end_reasons"] == {"done": 24}, name
        assert mode["max_in_flight"] == 6, name
        assert mode["busy_source"] == "generator"
        assert 0 < mode["generator_busy_share"] <= 1.0 + 1e-6
        assert 1 <= mode["running_batch"] <= 6


def test_repeats_interleave_modes_and_report_the_median_round(chat):
    workload = Workload(WorkloadConfig(episodes=8, slots=4, max_turns=2, time_scale=0.002, seed=5))
    plan = _synthetic_plan(workload, chat)
    plan.repeats = 3
    order = []
    inner = plan.envs
    plan.envs = lambda: (order.append(len(order)), inner())[1]
    result = asyncio.run(run_plan(plan))
    assert len(order) == 6  # three rounds of two modes
    for mode in result["modes"].values():
        rounds = mode["rounds_env_steps_per_s"]
        assert len(rounds) == 3
        assert mode["env_steps_per_s"] == sorted(rounds)[1]
        assert mode["env_steps"] == workload.total_steps
    a, lock = result["modes"]["async"], result["modes"]["lockstep"]
    assert result["async_over_lockstep"] == pytest.approx(a["env_steps_per_s"] / lock["env_steps_per_s"])


def test_median_round_on_random_rounds():
    rng = random.Random(2)
    for n in (1, 2, 5, 6):
        rounds = [{"env_steps_per_s": rng.uniform(1, 100), "i": i} for i in range(n)]
        chosen = median_round(rounds)
        below = sum(r["env_steps_per_s"] < chosen["env_steps_per_s"] for r in rounds)
        assert below == (n - 1) // 2
        assert chosen["rounds_env_steps_per_s"] == [r["env_steps_per_s"] for r in rounds]


def test_time_limit_cuts_a_mode_short_and_keeps_its_figures(chat):
    # at time scale 1 this plan needs far more than the limit (each of 400 episodes waits on its env)
    workload = Workload(WorkloadConfig(episodes=400, slots=2, max_turns=4, time_scale=1.0))
    plan = _synthetic_plan(workload, chat, time_limit_s=0.3)
    plan.modes = ("async",)
    mode = asyncio.run(run_plan(plan))["modes"]["async"]
    assert mode["truncated"]
    assert 2 <= mode["episodes_started"] < 400  # both slots started, the plan did not finish
    assert mode["end_reasons"] == {}  # no trajectory came back: the figures are the probe's
    width = mode["timeline"]["bin_s"]
    assert sum(mode["timeline"]["env_steps_per_s"]) * width == pytest.approx(mode["env_steps"])


def test_quantiles_are_nearest_rank_percentiles():
    rng = random.Random(0)
    for n in (1, 2, 7, 100, 1001):
        values = [rng.expovariate(1.0) for _ in range(n)]
        q = quantiles(values)
        assert q["p50"] == np.percentile(values, 50, method="inverted_cdf")
        assert q["p99"] == np.percentile(values, 99, method="inverted_cdf")
    assert quantiles([]) == {"p50": None, "p99": None}


def test_timeline_bins_steps_and_counts_episodes_in_flight():
    rng = random.Random(1)
    probe = Probe()
    probe.step_times = sorted(rng.uniform(0, 10) for _ in range(500))
    starts = [rng.uniform(0, 5) for _ in range(30)]
    ends = [s + rng.uniform(0.1, 5) for s in starts]
    probe.episode_events = [(s, 1) for s in starts] + [(e, -1) for e in ends]
    line = timeline(probe, 10.0, bins=20)
    assert sum(line["env_steps_per_s"]) * 0.5 == pytest.approx(500)
    for b, t in enumerate(line["t_s"]):
        assert t == pytest.approx(0.5 * (b + 1))
        expected = sum(1 for s, e in zip(starts, ends, strict=True) if s <= t < e)
        assert line["in_flight"][b] == expected
        in_bin = sum(1 for x in probe.step_times if 0.5 * b <= x < 0.5 * (b + 1))
        assert line["env_steps_per_s"][b] == pytest.approx(in_bin / 0.5)


BAD = [
    (["--env", "nope"], "unknown env 'nope'"),
    (["--env", "babyai", "--episodes", "0"], "--episodes must be >= 1"),
    (["--env", "babyai", "--concurrency", "-1"], "--concurrency must be >= 1"),
    (["--env", "babyai", "--max-turns", "0"], "--max-turns must be >= 1"),
    (["--env", "babyai", "--time-limit", "0"], "--time-limit must be > 0"),
    (["--env", "babyai", "--env-url", "http://127.0.0.1:1"], "exactly one of --env"),
    ([], "exactly one of --env"),
    (["--env", "babyai", "--generator", "vllm"], "--generator must be one of"),
    (["--env", "babyai", "--generator", "sglang"], "needs --sglang-urls"),
    (["--env", "babyai", "--sglang-urls", "http://x"], "only with --generator sglang"),
    (["--env", "babyai", "--env-option", "level"], "KEY=VALUE"),
    (["--env", "babyai", "--env-option", "nonsense=1"], "bad --env-option"),
    (["--env-url", "ftp://host"], "must start with http://"),
    (["--workload", "nope"], "unknown --workload 'nope'"),
    (["--workload", "agentic", "--env", "babyai"], "--env do not apply"),
    (["--env", "babyai", "--time-scale", "0.5"], "only with --workload"),
    (["--env", "babyai", "--repeats", "0"], "--repeats must be >= 1"),
    (["--workload", "agentic", "--repeats", "0"], "--repeats must be >= 1"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_arguments_are_one_line_errors(args, message, capsys):
    assert main(["bench", "rollout", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("turnrl: error:") and message in err, err
    assert "Traceback" not in err


def test_unreachable_servers_are_one_line_errors(capsys):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["bench", "rollout", "--env-url", dead]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"turnrl: error: cannot reach the env server at {dead}") and len(err.splitlines()) == 1
    args = ["--env", "babyai", "--generator", "sglang", "--sglang-urls", dead, "--model", "/nonexistent"]
    assert main(["bench", "rollout", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"turnrl: error: cannot reach the SGLang server at {dead}") and len(err.splitlines()) == 1


def test_remote_agentgym_server(tmp_path):
    out = tmp_path / "remote.json"
    with running_server("babyai") as (url, _):
        args = ["--env-url", url, "--episodes", "3", "--concurrency", "3", "--max-turns", "2", "--max-new-tokens", "6"]
        assert main(["bench", "rollout", *args, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for mode in result["modes"].values():
        assert mode["task_ids"] == [0, 1, 2]
        assert mode["end_reasons"].get("env_error", 0) == 0
        assert mode["env_steps"] >= 3
