"""The trajectory log: what the agent read and wrote, one JSONL file per training step.

Invariant: ``trajectories/step-NNNNNN.jsonl`` holds one line per episode of that
step, text only (the decoded prompt, then per turn the action text, the
observation, the reward and whether the action was valid; the episode's task,
turn cap, end reason, reward and success), never token ids, so a run's log stays
small; a file is written whole under a temporary name and renamed into place, so a
reader never sees half a step and a redone step (after a resume) replaces its file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from turnrl.protocol import Trajectory

DIRECTORY = "trajectories"


def step_file(run_dir: str | Path, step: int) -> Path:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return Path(run_dir) / DIRECTORY / f"step-{step:06d}.jsonl"


def episode_record(trajectory: Trajectory, tokenizer) -> dict:
    prompt = tokenizer.decode(trajectory.token_ids[: trajectory.prompt_len], skip_special_tokens=True)
    task = trajectory.task
    return {
        "item_id": task.item_id,
        "split": task.split,
        "group": task.group,
        "prompt": prompt,
        "turns": [
            {"action": t.action_text, "observation": t.observation, "reward": t.reward, "valid": t.valid}
            for t in trajectory.turns
        ],
        "turn_cap": trajectory.turn_cap,
        "end_reason": trajectory.end_reason,
        "reward": trajectory.reward,
        "success": trajectory.success,
        "error": trajectory.error,
    }


def log_trajectories(run_dir: str | Path, step: int, trajectories: list[Trajectory], tokenizer) -> Path:
    """Write the episodes of training step ``step`` (``tokenizer`` decodes each prompt); returns the file."""
    path = step_file(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for trajectory in trajectories:
            f.write(json.dumps(episode_record(trajectory, tokenizer), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def logged_steps(run_dir: str | Path) -> dict[int, Path]:
    """``{step: file}`` of the steps a run logged, in step order."""
    files = sorted((Path(run_dir) / DIRECTORY).glob("step-*.jsonl"))
    return {int(f.stem.removeprefix("step-")): f for f in files}


def read_step(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
