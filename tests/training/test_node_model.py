"""The async benchmark's modelled GPU node under the real training loop: the same work at every staleness bound,
the bound held on every token, and the split layout overlapping generation with the modelled update."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import msgspec
import pytest

from turnrl.engine.records.metrics import read_metrics
from turnrl.recipes import demo_config

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))  # bench/ scripts import their siblings by name
from latency_model import WorkloadConfig
from node_model import NodeCosts, run_modelled
from virtual_time import VirtualClockLoop

WORKLOAD = WorkloadConfig(
    episodes=64, max_turns=3, tokens_median=8.0, tokens_p99=40.0, tokens_cap=40, env_median_s=0.05, env_p99_s=0.5
)
COSTS = NodeCosts(gpus=4, update_fixed_s=2.0)


def _run(tmp_path: Path, eta: int, generation_gpus: int | None) -> tuple[dict, list[dict]]:
    out = tmp_path / f"eta{eta}-{generation_gpus}"
    base = demo_config("babyai", steps=4, out=str(out), seed=3)
    config = msgspec.structs.replace(
        base,
        rollout=msgspec.structs.replace(base.rollout, staleness=eta, prompts_per_step=3, group_size=2),
        curriculum=msgspec.structs.replace(base.curriculum, kind="fixed", caps=()),
        eval=msgspec.structs.replace(base.eval, every=0),
        checkpoint_every=0,
    )
    return run_modelled(config, WORKLOAD, COSTS, generation_gpus), read_metrics(out / "metrics.jsonl")


def test_every_layout_does_the_same_work_within_its_staleness_bound(tmp_path):
    runs = {(0, None): _run(tmp_path, 0, None), (2, 2): _run(tmp_path, 2, 2)}
    work = {key: [(r["train/episodes"], r["learner/modelled_tokens"]) for r in rows] for key, (_, rows) in runs.items()}
    assert work[(0, None)] == work[(2, 2)] and len(work[(0, None)]) == 4
    sync, sync_rows = runs[(0, None)]
    split, split_rows = runs[(2, 2)]
    assert all(r["staleness/max"] == 0 for r in sync_rows)
    assert all(r["staleness/max"] <= 2 for r in split_rows) and split_rows[-1]["buffer/stale_dropped"] == 0
    assert (sync["generation_gpus"], sync["train_gpus"]) == (4, 4) and (
        split["generation_gpus"],
        split["train_gpus"],
    ) == (2, 2)
    # the modelled learner's time is a function of the work: half the GPUs, the same tokens -> the variable part doubles
    variable = sync["learner_busy"] - 4 * COSTS.update_fixed_s
    assert split["learner_busy"] - 4 * COSTS.update_fixed_s == pytest.approx(2 * variable)
    # on the virtual clock a run's time is a function of the work and the costs, not of the machine
    again, _ = _run(tmp_path / "again", 2, 2)
    assert again["rl_seconds"] == split["rl_seconds"] and again["generator_busy"] == split["generator_busy"]
    assert split["rl_seconds"] >= 4 * (2 * variable / 4 + COSTS.update_fixed_s)  # never faster than its learner


def test_a_layout_must_leave_a_gpu_to_train(tmp_path):
    with pytest.raises(ValueError, match="leave at least one"):
        _run(tmp_path, 1, 4)


def test_the_virtual_clock_fires_every_wait_at_its_time_and_stops_while_a_thread_works():
    log = []

    async def main():
        loop = asyncio.get_running_loop()

        async def sleeper(name, seconds):
            await asyncio.sleep(seconds)
            log.append((name, loop.time()))

        def learner():
            time.sleep(0.05)  # real work: the clock stands still meanwhile (a timer due at 0.01 waits for it)
            log.append(("worked", loop.time()))
            loop.sleep_in_thread(100.0)  # a modelled computation off the loop
            log.append(("learner", loop.time()))
            return 7

        out = await asyncio.gather(
            sleeper("a", 50.0), asyncio.to_thread(learner), sleeper("c", 100.5), sleeper("d", 0.01), sleeper("b", 150.0)
        )
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(1e6), timeout=5.0)
        return out[1], loop.time()

    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        result, end = runner.run(main())
    assert result == 7 and end == 155.0
    assert log == [("worked", 0.0), ("d", 0.01), ("a", 50.0), ("learner", 100.0), ("c", 100.5), ("b", 150.0)]


@pytest.mark.parametrize(
    ("field", "value"), [("gpus", 1), ("train_tokens_per_s_per_gpu", 0.0), ("broadcast_s", -1.0), ("prompt_tokens", -5)]
)
def test_node_costs_refuse_a_bad_value_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        NodeCosts(**{field: value})
