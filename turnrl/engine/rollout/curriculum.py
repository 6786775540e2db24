"""Turn-cap curricula: a fixed cap, ScalingInter-RL's staged caps, or stages advanced adaptively.

Invariants:
- ScalingInter: steps 1..K run under the first cap, K+1..2K the second, and so on
  (the last cap from then on); the cap is a pure function of the step, so a run
  resumed at any step uses exactly the cap an uninterrupted run would have used.
- Adaptive: the stage only moves forward; it advances when the share of episodes
  that ended at the cap reaches a threshold, or when success has plateaued over a
  window; its state (stage and recent history) is part of the checkpoint.
- Caps are strictly increasing positive integers; a bad schedule is rejected when
  the config is built.
"""

from __future__ import annotations

from turnrl.config.curriculum import SCALING_INTER_DEFAULTS, CurriculumConfig
from turnrl.protocol import Trajectory


class TurnCapSchedule:
    def __init__(self, config: CurriculumConfig, family: str, fixed_cap: int):
        self.config = config
        default_caps, default_steps = SCALING_INTER_DEFAULTS.get(family, ((fixed_cap,), 100))
        if config.kind == "fixed":
            self.caps = config.caps[-1:] or (fixed_cap,)
        else:
            self.caps = config.caps or default_caps
        self.stage_steps = max(1, round((config.stage_steps or default_steps) * config.scale))
        self.stage = 0  # adaptive only; ScalingInter derives it from the step
        self.last_advance = 0
        self.success_history: list[float] = []

    def stage_for(self, step: int) -> int:
        if step < 1:
            raise ValueError(f"steps count from 1, got {step}")
        if self.config.kind == "scaling_inter":
            return min((step - 1) // self.stage_steps, len(self.caps) - 1)
        if self.config.kind == "adaptive":
            return self.stage
        return 0

    def cap(self, step: int) -> int:
        return self.caps[self.stage_for(step)]

    def observe(self, step: int, trajectories: list[Trajectory]) -> None:
        """Feed a finished step's episodes (adaptive schedules may advance a stage)."""
        if self.config.kind != "adaptive" or not trajectories:
            return
        cfg = self.config
        at_cap = sum(t.end_reason == "turn_cap" for t in trajectories) / len(trajectories)
        self.success_history.append(sum(t.success for t in trajectories) / len(trajectories))
        if self.stage >= len(self.caps) - 1 or step - self.last_advance < cfg.min_stage_steps:
            return
        window = cfg.plateau_window
        plateau = False
        if window and len(self.success_history) >= 2 * window:
            recent = sum(self.success_history[-window:]) / window
            before = sum(self.success_history[-2 * window : -window]) / window
            plateau = recent - before < cfg.plateau_delta
        if at_cap >= cfg.cap_share_threshold or plateau:
            self.stage += 1
            self.last_advance = step
            self.success_history.clear()

    def state_dict(self) -> dict:
        return {"stage": self.stage, "last_advance": self.last_advance, "success_history": list(self.success_history)}

    def load_state_dict(self, state: dict) -> None:
        self.stage = int(state["stage"])
        self.last_advance = int(state["last_advance"])
        self.success_history = [float(x) for x in state["success_history"]]
