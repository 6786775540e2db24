"""Turn-cap curricula: ScalingInter stage boundaries, resume, the adaptive schedule, bad schedules."""

from __future__ import annotations

import pytest

from turnrl.config.curriculum import SCALING_INTER_DEFAULTS, CurriculumConfig
from turnrl.engine.rollout.curriculum import TurnCapSchedule
from turnrl.protocol import Task, Trajectory


def _episodes(n_cap: int, n_done: int, success: bool = False) -> list[Trajectory]:
    out = []
    for i in range(n_cap + n_done):
        out.append(
            Trajectory(
                task=Task(env="e", item_id=i),
                token_ids=[1],
                loss_mask=[0],
                logprobs=[0.0],
                versions=[-1],
                prompt_len=1,
                end_reason="turn_cap" if i < n_cap else "done",
                success=success and i >= n_cap,
            )
        )
    return out


def test_scaling_inter_stage_boundaries():
    schedule = TurnCapSchedule(CurriculumConfig(kind="scaling_inter", caps=(2, 4, 6), stage_steps=3), "babyai", 6)
    assert [schedule.cap(s) for s in range(1, 11)] == [2, 2, 2, 4, 4, 4, 6, 6, 6, 6]
    assert [schedule.stage_for(s) for s in (3, 4, 6, 7, 1000)] == [0, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        schedule.cap(0)


def test_paper_defaults_and_scale():
    schedule = TurnCapSchedule(CurriculumConfig(kind="scaling_inter", scale=0.1), "babyai", 6)
    assert schedule.caps == SCALING_INTER_DEFAULTS["babyai"][0] == (6, 13, 20)
    assert schedule.stage_steps == 10
    assert [schedule.cap(s) for s in (10, 11, 20, 21)] == [6, 13, 13, 20]
    web = TurnCapSchedule(CurriculumConfig(kind="scaling_inter"), "web", 15)
    assert web.caps == (8, 12, 15) and web.stage_steps == 80 and web.cap(80) == 8 and web.cap(81) == 12
    fixed = TurnCapSchedule(CurriculumConfig(), "babyai", 6)
    assert {fixed.cap(s) for s in range(1, 500, 37)} == {6}


def test_resume_continues_in_the_same_stage():
    cfg = CurriculumConfig(kind="scaling_inter", caps=(3, 5), stage_steps=4)
    uninterrupted = TurnCapSchedule(cfg, "babyai", 5)
    first = TurnCapSchedule(cfg, "babyai", 5)
    for step in range(1, 5):  # killed after step 4, the last step of stage 0
        first.cap(step)
    resumed = TurnCapSchedule(cfg, "babyai", 5)
    resumed.load_state_dict(first.state_dict())
    assert [resumed.cap(s) for s in range(5, 9)] == [uninterrupted.cap(s) for s in range(5, 9)] == [5] * 4
    assert resumed.cap(4) == 3  # the step a resumed run repeats (if it must) keeps its original cap


def test_adaptive_advances_on_cap_share_and_survives_a_round_trip():
    cfg = CurriculumConfig(
        kind="adaptive", caps=(2, 4, 8), cap_share_threshold=0.5, min_stage_steps=2, plateau_window=0
    )
    schedule = TurnCapSchedule(cfg, "babyai", 8)
    schedule.observe(1, _episodes(n_cap=6, n_done=4))
    assert schedule.cap(2) == 2  # too soon after the start
    schedule.observe(2, _episodes(n_cap=3, n_done=7))
    assert schedule.cap(3) == 2  # below the threshold
    schedule.observe(3, _episodes(n_cap=5, n_done=5))
    assert schedule.cap(4) == 4
    restored = TurnCapSchedule(cfg, "babyai", 8)
    restored.load_state_dict(schedule.state_dict())
    assert restored.cap(4) == 4 and restored.state_dict() == schedule.state_dict()
    for step in range(4, 20):
        schedule.observe(step, _episodes(n_cap=9, n_done=1))
    assert schedule.cap(20) == 8  # never past the last stage


def test_adaptive_advances_on_a_success_plateau():
    cfg = CurriculumConfig(
        kind="adaptive", caps=(2, 4), cap_share_threshold=1.0, plateau_window=3, plateau_delta=0.05, min_stage_steps=1
    )
    schedule = TurnCapSchedule(cfg, "babyai", 4)
    for step in range(1, 6):
        schedule.observe(step, _episodes(n_cap=1, n_done=9, success=True))
        assert schedule.cap(step + 1) == 2
    schedule.observe(6, _episodes(n_cap=1, n_done=9, success=True))
    assert schedule.cap(7) == 4


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (dict(kind="scaling_inter", caps=(6, 6, 20)), "strictly increasing"),
        (dict(kind="scaling_inter", caps=(13, 6)), "strictly increasing"),
        (dict(caps=(0, 3)), "positive"),
        (dict(kind="linear"), "curriculum.kind"),
        (dict(scale=0.0), "scale"),
        (dict(stage_steps=-1), "stage_steps"),
    ],
)
def test_bad_schedules_are_rejected(bad, needle):
    with pytest.raises(ValueError, match=needle):
        CurriculumConfig(**bad)
