"""Training killed with SIGKILL at seeded random moments, then resumed with ``turnrl train --resume``.

A tiny run (the tiny BabyAI model, eta = 0, a checkpoint every step, a held-out evaluation mid-run) runs once
uninterrupted, then once per kill: ``turnrl train`` as a subprocess, killed when it reaches a seeded phase (rollout,
update, checkpoint write, evaluation) of a seeded step, after a seeded delay; then ``turnrl train --resume`` in the
same directory to the end. The child reports its phases through a pipe: it is the CLI itself, run by this file
with markers wrapped around four methods (``--child``), nothing else changed.

Invariant: a kill counts as recovered only if the resumed run exits 0, its ``metrics.jsonl`` has every step exactly
once, and every tensor of its final weights equals the uninterrupted run's bit for bit. The phase reported is the
last marker the child sent before the kill (``after-X``: X had finished, the next had not started).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve()
STEPS = 3
PHASES = ("rollout", "update", "checkpoint", "eval")
RUN_TIMEOUT_S = 600.0


def settings(model_dir: Path) -> list[str]:
    values = [
        f"model.path='{model_dir}'",
        "rollout.staleness=0",
        "checkpoint_every=1",
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "rollout.episode.turn_cap=2",
        "rollout.episode.max_new_tokens=6",
        "eval.tasks=2",
        "eval.turn_cap=2",
        "eval.every=2",
    ]
    return [arg for v in values for arg in ("--set", v)]


# ---- the child: the CLI with phase markers -----------------------------------------------------------------------
def child(fd: int, argv: list[str]) -> None:
    from turnrl import cli
    from turnrl.engine.eval.heldout import HeldOutEvaluator
    from turnrl.engine.training.learner import Learner
    from turnrl.engine.training.producer import RolloutProducer
    from turnrl.engine.training.setup import TrainingRun

    out = os.fdopen(fd, "w", buffering=1)
    current = {"step": 0}

    def mark(text: str) -> None:
        out.write(f"{text}\n")
        out.flush()

    next_batch, update, checkpoint, row = (
        RolloutProducer.next_batch,
        Learner.update,
        TrainingRun.checkpoint,
        HeldOutEvaluator.row,
    )

    async def marked_next_batch(self, step):
        current["step"] = step
        mark(f"rollout {step}")
        result = await next_batch(self, step)
        mark(f"after-rollout {step}")
        return result

    def marked_update(self, trajectories):
        mark(f"update {current['step']}")
        result = update(self, trajectories)
        mark(f"after-update {current['step']}")
        return result

    def marked_checkpoint(self, step):
        mark(f"checkpoint {step}")
        result = checkpoint(self, step)
        mark(f"after-checkpoint {step}")
        return result

    async def marked_row(self, step, full=False):
        mark(f"eval {step}")
        result = await row(self, step, full)
        mark(f"after-eval {step}")
        return result

    RolloutProducer.next_batch, Learner.update = marked_next_batch, marked_update
    TrainingRun.checkpoint, HeldOutEvaluator.row = marked_checkpoint, marked_row
    sys.exit(cli.main(argv))


# ---- the parent --------------------------------------------------------------------------------------------------
def _train(run: Path, model_dir: Path, resume: bool, phases_to=None) -> tuple[subprocess.Popen, threading.Thread]:
    args = ["train", "--out", str(run), "--steps", str(STEPS)]
    args += ["--resume"] if resume else settings(model_dir)
    read, write = os.pipe()
    process = subprocess.Popen(
        [sys.executable, str(HERE), "--child", str(write), *args],
        pass_fds=(write,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write)
    lines = os.fdopen(read)
    reader = threading.Thread(target=phases_to or (lambda lines: [None for _ in lines]), args=(lines,), daemon=True)
    reader.start()
    return process, reader


def _finish(started: tuple[subprocess.Popen, threading.Thread], what: str) -> None:
    process, _ = started
    try:
        _, err = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise RuntimeError(f"{what} did not end within {RUN_TIMEOUT_S} s") from None
    if process.returncode != 0:
        raise RuntimeError(f"{what} exited with {process.returncode}: {err[-2000:]}")


def final_tensors(run: Path) -> dict:
    from safetensors.torch import load_file

    from turnrl.engine.records.checkpoint import latest_checkpoint

    return load_file(str(latest_checkpoint(run) / "model.safetensors"))


def kill_once(run: Path, model_dir: Path, phase: str, step: int, delay: float) -> dict:
    """Start a run, SIGKILL it ``delay`` s after it reports ``phase step``, resume it; what happened."""
    seen: list[tuple[float, str]] = []
    target = threading.Event()

    def watch(lines) -> None:
        for line in lines:
            seen.append((time.monotonic(), line.strip()))
            if line.strip() == f"{phase} {step}":
                target.set()

    process, reader = _train(run, model_dir, resume=False, phases_to=watch)
    killed_in = None
    if target.wait(RUN_TIMEOUT_S) and process.poll() is None:
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        reader.join(30)  # every marker in the pipe was written before the kill: the last one is the phase
        killed_in = seen[-1][1] if seen else "start"
    else:
        process.kill()
        process.wait(30)
    row = {
        "target": f"{phase} {step}",
        "delay_s": round(delay, 3),
        "killed_in": killed_in,
        "killed": process.returncode == -9,
    }
    from turnrl.engine.records.checkpoint import latest_checkpoint

    row["resumed_from"] = latest_checkpoint(run).name if latest_checkpoint(run) is not None else None
    resumed = _train(run, model_dir, resume=True)
    try:
        _finish(resumed, "the resumed run")
        row["resume_ok"] = True
    except RuntimeError as exc:
        row["resume_ok"], row["error"] = False, str(exc)[-1000:]
    return row


def train_section(model_dir: Path, kills: int, seed: int) -> dict:
    import torch

    from turnrl.engine.records.metrics import read_metrics

    rng = random.Random(seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="turnrl-chaos-train-") as tmp:
        reference = Path(tmp) / "reference"
        start = time.perf_counter()
        _finish(_train(reference, model_dir, resume=False), "the uninterrupted run")
        reference_s = time.perf_counter() - start
        expected = final_tensors(reference)
        for i in range(kills):
            phase = PHASES[i % len(PHASES)]
            step = rng.choice((2, STEPS)) if phase == "eval" else rng.randint(2, STEPS)
            delay = rng.uniform(0.0, 0.05 if phase == "update" else 0.02)  # most phases last well under 0.1 s
            run = Path(tmp) / f"kill-{i}"
            print(f"[chaos] train: kill {i + 1}/{kills} at {phase} {step} + {delay:.3f} s", flush=True)
            row = kill_once(run, model_dir, phase, step, delay)
            if row["resume_ok"]:
                steps = [r["step"] for r in read_metrics(run / "metrics.jsonl")]
                got = final_tensors(run)
                row["steps_exactly_once"] = steps == list(range(1, STEPS + 1))
                row["weights_equal"] = got.keys() == expected.keys() and all(
                    torch.equal(got[k], expected[k]) for k in expected
                )
            else:
                row["steps_exactly_once"] = row["weights_equal"] = False
            row["exact"] = row["killed"] and row["steps_exactly_once"] and row["weights_equal"]
            rows.append(row)
            shutil.rmtree(run, ignore_errors=True)
    by_phase: dict[str, int] = {}
    for row in rows:
        label = (row["killed_in"] or "not killed").split(" ")[0]
        by_phase[label] = by_phase.get(label, 0) + 1
    return {
        "steps": STEPS,
        "kills": len(rows),
        "killed": sum(r["killed"] for r in rows),
        "resumed_exact": sum(r["exact"] for r in rows),
        "killed_in_phase": dict(sorted(by_phase.items())),
        "uninterrupted_run_s": round(reference_s, 1),
        "rows": rows,
    }


def train_table(section: dict) -> str:
    phases = ", ".join(f"{k}: {v}" for k, v in section["killed_in_phase"].items())
    lines = [
        f"training killed with SIGKILL, then `turnrl train --resume` ({section['steps']} steps, eta = 0, checkpoint "
        f"every step): {section['resumed_exact']} of {section['kills']} resumed runs exact (every step once in "
        "metrics.jsonl, final weights equal to the uninterrupted run's bit for bit)",
        f"killed in (the child's last phase marker): {phases}",
        f"{'target':<16}{'delay s':>8}  {'killed in':<22}{'resumed from':<20}{'steps once':>11}{'weights ==':>11}",
    ]
    for r in section["rows"]:
        lines.append(
            f"{r['target']:<16}{r['delay_s']:>8.3f}  {r['killed_in'] or '-':<22}{r['resumed_from'] or '-':<20}"
            f"{r['steps_exactly_once']!s:>11}{r['weights_equal']!s:>11}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3:])
    else:
        print(json.dumps({"usage": "run through bench/chaos.py"}))
