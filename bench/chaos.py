"""What turnrl survives, in figures: fuzzed wires, processes killed under a rollout, training killed and resumed,
long create/reset/close soaks. Loopback only; every process real (see each section's module for its invariant).

Sections (``--only`` runs one):
- ``fuzz`` (``chaos_fuzz.py``): N bad frames per wire (generation service, env worker, AgentGym HTTP env server,
  search retriever); error replies, unanswered frames, crashes (goal 0), answer time p50/p99, RSS before/after;
- ``faults`` (``chaos_faults.py``): SIGKILL / SIGSTOP (+SIGCONT, or left for the heartbeat / health check) of env
  workers and of the supervised generation service, of a SciWorld JVM and of Chromium, under a running rollout;
  episodes started, finished, per end reason, lost (goal 0);
- ``train`` (``chaos_train.py``): ``turnrl train`` SIGKILLed at K seeded moments (rollout, update, checkpoint write,
  evaluation) and resumed; resumed runs with every step once and bit-equal final weights (goal K of K);
- ``soak`` (``chaos_soak.py``): create/reset/close cycles per family through the HTTP server and an env worker;
  RSS and open descriptors before/after (goal: flat within 5 %).

    python bench/chaos.py --json bench/results/chaos.json     # the full run
    python bench/chaos.py --quick --json /tmp/chaos.json      # the suite's run (tests/test_chaos_quick.py)

``goals_met`` in the JSON is true when every figure meets its goal: no crash, no unanswered frame, no lost
episode, every resumed run exact, every soak flat.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SECTIONS = ("fuzz", "faults", "train", "soak")
FULL = {
    "frames": 10_000,
    "kills": 20,
    "soak": {"babyai": 1000, "textcraft": 1000, "search": 1000, "web": 100, "sciworld": 8},
}
QUICK = {"frames": 200, "kills": 2, "soak": {"babyai": 40, "textcraft": 40}}


def goals(results: dict) -> dict[str, bool]:
    out = {}
    if "fuzz" in results:
        out["fuzz: no crash, every frame answered"] = all(
            r["crashes"] == 0 and r["unanswered"] == 0 for r in results["fuzz"]["rows"]
        )
    if "faults" in results:
        out["faults: no episode lost"] = all(r["lost"] == 0 and r["failure"] is None for r in results["faults"]["rows"])
    if "train" in results:
        t = results["train"]
        out["train: every resumed run exact"] = t["kills"] > 0 and t["resumed_exact"] == t["kills"]
    if "soak" in results:
        out["soak: RSS and descriptors flat"] = all(r["flat"] for r in results["soak"]["rows"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames, kills and cycles (about 2 minutes)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these sections")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, help="fuzz: frames per wire")
    parser.add_argument("--kills", type=int, help="train: SIGKILLs (one resumed run each)")
    parser.add_argument("--model", type=Path, help="model directory (default: the tiny BabyAI model, built here)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    plan = dict(QUICK if args.quick else FULL)
    frames = args.frames if args.frames is not None else plan["frames"]
    kills = args.kills if args.kills is not None else plan["kills"]
    if frames < 1 or kills < 1:
        parser.error("--frames and --kills must be >= 1")
    chosen = args.only or list(SECTIONS)

    from chaos_faults import chromium_available, faults_section, faults_table, sciworld_available
    from chaos_fuzz import fuzz_section, fuzz_table
    from chaos_soak import soak_section, soak_table
    from chaos_train import train_section, train_table

    start = time.perf_counter()
    results: dict = {"quick": args.quick, "seed": args.seed}
    with tempfile.TemporaryDirectory(prefix="turnrl-chaos-") as tmp:
        model = args.model
        if model is None:
            from generation_smoke import build_model

            model = build_model(Path(tmp) / "policy")
        for section in chosen:
            t0 = time.perf_counter()
            if section == "fuzz":
                results["fuzz"] = {"frames_per_wire": frames, "rows": fuzz_section(model, frames, args.seed)}
                table = fuzz_table(results["fuzz"]["rows"])
            elif section == "faults":
                results["faults"] = faults_section(model, args.seed, args.quick)
                table = faults_table(results["faults"])
            elif section == "train":
                results["train"] = train_section(model, kills, args.seed)
                table = train_table(results["train"])
            else:
                unavailable = {"sciworld": sciworld_available(), "web": chromium_available()}
                results["soak"] = soak_section(plan["soak"], args.seed, unavailable)
                if args.quick:
                    results["soak"]["not_run"]["search, web, sciworld"] = "not run with --quick"
                table = soak_table(results["soak"])
            results[section]["wall_s"] = round(time.perf_counter() - t0, 1)
            print(table, flush=True)
            print(f"[chaos] {section}: {results[section]['wall_s']:.0f} s", flush=True)
    results["goals"] = goals(results)
    results["goals_met"] = all(results["goals"].values())
    results["wall_s"] = round(time.perf_counter() - start, 1)
    for name, met in results["goals"].items():
        print(f"{'met ' if met else 'MISSED'}  {name}")
    print(f"[chaos] total {results['wall_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
