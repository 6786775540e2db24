"""The GPU suite: one command that, on a machine with a CUDA GPU, exercises the GPU path and writes one JSON.

    python bench/gpu_suite.py                          # the embedded tiny model, out: runs/gpu_suite/
    python bench/gpu_suite.py --model /models/Qwen2.5-0.5B-Instruct --out runs/gpu_suite_qwen
    python bench/gpu_suite.py --no-install             # never pip install (sglang must be there)

Steps, each recorded as ``ok``, ``failed`` (with the tail of its log) or ``skipped`` (with the reason):
1. ``environment``: torch, CUDA, the GPUs, the installed sglang;
2. ``install``: ``pip install "sglang[all]>=0.5.23"`` when sglang is missing (GPU machines only);
3. ``model``: the model directory named, or the embedded tiny model built here (no download; CPU too);
4. ``server``: SGLang launched on the model (``--skip-tokenizer-init``, ``--mem-fraction-static``), on the last
   GPU when there are several, waited for through ``/health_generate`` as training waits;
5. ``generation_smoke``: ``bench/generation_smoke.py`` through it: sampled log-probs against a recomputation in
   transformers, and the version of tokens after a weight update;
6. ``kernels``: ``bench/kernel_speed.py --skip-logprob``: fused log-prob TFLOP/s against a measured bf16 matmul, GAE
   GB/s against a measured device copy;
7. ``train``: ``turnrl train --generator sglang`` for a few steps with the weights broadcast to the server
   (NCCL when the learner and the server have GPUs of their own, gloo when they share the only one: NCCL cannot
   put two ranks on one device; if that fails there, the run is repeated with disk sync as ``train_disk``).
Without a GPU every GPU step is skipped with that reason, and the rest runs. The whole suite keeps to
``--budget-s`` (default 540 s): a step that would pass it is cut and recorded as failed. Exit status 1 when a
step failed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = "sglang[all]>=0.5.23"


class Suite:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.deadline = time.monotonic() + args.budget_s
        self.report: dict = {"steps": {}}
        self.gpus: list[str] = []

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def record(self, name: str, status: str, seconds: float = 0.0, **fields) -> dict:
        entry = {"status": status, "seconds": round(seconds, 2), **fields}
        self.report["steps"][name] = entry
        detail = fields.get("reason") or fields.get("error") or ""
        print(f"[gpu_suite] {name:<17} {status:<8} {seconds:7.1f} s  {detail}", flush=True)
        return entry

    def skip_without_gpu(self, name: str) -> bool:
        if self.gpus:
            return False
        self.record(name, "skipped", reason="no CUDA GPU visible (torch.cuda.is_available() is False)")
        return True

    def run(self, name: str, cmd: list[str], log: Path, env: dict | None = None) -> tuple[bool, float]:
        start = time.monotonic()
        with open(log, "w") as handle:
            try:
                done = subprocess.run(
                    cmd, stdout=handle, stderr=subprocess.STDOUT, timeout=self.left(), env=env, cwd=ROOT
                )
                ok = done.returncode == 0
            except subprocess.TimeoutExpired:
                ok = False
                handle.write(f"\n[gpu_suite] cut: the suite's budget of {self.args.budget_s} s ran out\n")
        return ok, time.monotonic() - start

    def tail(self, log: Path, lines: int = 25) -> str:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def environment(suite: Suite) -> None:
    start = time.monotonic()
    import torch

    if torch.cuda.is_available():
        suite.gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    try:
        sglang = importlib.metadata.version("sglang")
    except importlib.metadata.PackageNotFoundError:
        sglang = None
    suite.record(
        "environment",
        "ok",
        time.monotonic() - start,
        torch=torch.__version__,
        cuda=torch.version.cuda,
        gpus=suite.gpus,
        sglang=sglang,
        python=sys.version.split()[0],
    )


def install(suite: Suite) -> None:
    if suite.skip_without_gpu("install"):
        return
    if _sglang_runs():
        suite.record("install", "skipped", reason="sglang already installed")
        return
    if suite.args.no_install:
        suite.record("install", "failed", error="sglang is not installed and --no-install was given")
        return
    log = suite.out / "install.log"
    ok, seconds = suite.run("install", [sys.executable, "-m", "pip", "install", PIN], log)
    suite.record("install", "ok" if ok and _sglang_runs() else "failed", seconds, error=None if ok else suite.tail(log))


def _sglang_runs() -> bool:
    probe = [sys.executable, "-c", "import sglang.srt.entrypoints.http_server"]
    return subprocess.run(probe, capture_output=True, timeout=300).returncode == 0


def model(suite: Suite) -> Path | None:
    start = time.monotonic()
    if suite.args.model:
        path = Path(suite.args.model)
        if not (path / "config.json").exists():
            suite.record("model", "failed", error=f"{path} is not a model directory (no config.json)")
            return None
        suite.record("model", "ok", time.monotonic() - start, path=str(path), built=False)
        return path
    sys.path.insert(0, str(ROOT / "bench"))
    from generation_smoke import build_model

    path = build_model(suite.out / "policy")
    suite.record("model", "ok", time.monotonic() - start, path=str(path), built=True)
    return path


class Server:
    """An SGLang server process on one GPU; stopped on exit."""

    def __init__(self, suite: Suite, model_dir: Path):
        self.suite, self.model_dir = suite, model_dir
        self.url = f"http://127.0.0.1:{suite.args.port}"
        self.process: subprocess.Popen | None = None
        self.gpu = len(suite.gpus) - 1  # the learner keeps GPU 0 when there are several

    def start(self) -> bool:
        start = time.monotonic()
        log = self.suite.out / "sglang.log"
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(self.gpu))
        cmd = [
            sys.executable, "-m", "sglang.launch_server", "--model-path", str(self.model_dir),
            "--host", "127.0.0.1", "--port", str(self.suite.args.port), "--skip-tokenizer-init",
            "--mem-fraction-static", str(self.suite.args.mem_fraction), "--log-level", "warning",
        ]  # fmt: skip
        if self.suite.args.disable_cuda_graph:
            cmd.append("--disable-cuda-graph")
        with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            asyncio.run(self._wait_ready(min(self.suite.left(), 300.0)))
        except Exception as exc:
            self.suite.record("server", "failed", time.monotonic() - start, error=f"{exc}\n{self.suite.tail(log)}")
            return False
        self.suite.record("server", "ok", time.monotonic() - start, url=self.url, gpu=self.gpu)
        return True

    async def _wait_ready(self, timeout_s: float) -> None:
        from turnrl.config.generation import SGLangOptions
        from turnrl.engine.generation.sglang_http import SGLangHTTP

        http = SGLangHTTP(SGLangOptions(ready_timeout_s=max(timeout_s, 1.0)))
        try:
            waiting = asyncio.create_task(http.wait_ready([self.url], poll_s=1.0))
            while not waiting.done():
                if self.process.poll() is not None:
                    waiting.cancel()
                    raise RuntimeError(f"SGLang exited with status {self.process.returncode}")
                await asyncio.sleep(1.0)
            await waiting
        finally:
            await http.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def generation_smoke(suite: Suite, server: Server | None, model_dir: Path | None) -> None:
    if suite.skip_without_gpu("generation_smoke"):
        return
    if server is None or model_dir is None:
        suite.record("generation_smoke", "skipped", reason="no server")
        return
    figures, log = suite.out / "smoke.json", suite.out / "smoke.log"
    cmd = [sys.executable, "bench/generation_smoke.py", "--generator", "sglang", "--model", str(model_dir)]
    cmd += ["--urls", server.url, "--tolerance", str(suite.args.tolerance), "--json", str(figures)]
    ok, seconds = suite.run("generation_smoke", cmd, log)
    data = json.loads(figures.read_text()) if figures.exists() else {}
    suite.record(
        "generation_smoke", "ok" if ok else "failed", seconds, figures=data, error=None if ok else suite.tail(log)
    )


def kernels(suite: Suite) -> None:
    if suite.skip_without_gpu("kernels"):
        return
    figures, log = suite.out / "kernels.json", suite.out / "kernels.log"
    ok, seconds = suite.run(
        "kernels", [sys.executable, "bench/kernel_speed.py", "--skip-logprob", "--json", str(figures)], log
    )
    data = json.loads(figures.read_text()) if figures.exists() else {}
    suite.record("kernels", "ok" if ok else "failed", seconds, figures=data, error=None if ok else suite.tail(log))


def train(suite: Suite, server: Server | None, model_dir: Path | None) -> None:
    if suite.skip_without_gpu("train"):
        return
    if server is None or model_dir is None:
        suite.record("train", "skipped", reason="no server")
        return
    backend = "nccl" if len(suite.gpus) > 1 else "gloo"
    if not _train_run(suite, server, model_dir, "train", "nccl", backend) and backend == "gloo":
        # one GPU: the broadcast path's gloo group is a stand-in for NCCL; the disk path still checks the rest
        _train_run(suite, server, model_dir, "train_disk", "disk", backend)


def _train_run(suite: Suite, server: Server, model_dir: Path, name: str, sync: str, backend: str) -> bool:
    run_dir = suite.out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = {
        "rollout.prompts_per_step": 4,
        "rollout.group_size": 4,
        "rollout.episode.turn_cap": 3,
        "rollout.episode.max_new_tokens": 32,
        "eval.tasks": 8,
        "rollout.generator.sglang.weight_sync": sync,
        "rollout.generator.sglang.nccl_backend": backend,
    }
    cmd = [sys.executable, "-m", "turnrl.cli", "train", "--model", str(model_dir), "--steps", str(suite.args.steps)]
    cmd += ["--out", str(run_dir), "--generator", "sglang", "--sglang-urls", server.url]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0")
    log = suite.out / f"{name}.log"
    ok, seconds = suite.run(name, cmd, log, env=env)
    rows = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    figures = {
        "weight_sync": f"broadcast ({backend})" if sync == "nccl" else "disk",
        "steps": len(rows),
        "weight_versions": [r.get("weight_version") for r in rows],
        "update_s_median": statistics.median(r["time/update_s"] for r in rows) if rows else None,
        "rollout_s_median": statistics.median(r["time/rollout_s"] for r in rows) if rows else None,
        "gen_errors": sum(r.get("end/gen_error", 0) for r in rows),
    }
    ok = ok and len(rows) == suite.args.steps and figures["gen_errors"] == 0
    suite.record(name, "ok" if ok else "failed", seconds, figures=figures, error=None if ok else suite.tail(log))
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: build the embedded tiny model)")
    parser.add_argument("--out", default="runs/gpu_suite")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--mem-fraction", type=float, default=0.35, help="SGLang's --mem-fraction-static")
    parser.add_argument("--tolerance", type=float, default=0.05, help="largest |log-prob gap| (bf16 vs fp32)")
    parser.add_argument("--steps", type=int, default=3, help="training steps")
    parser.add_argument("--budget-s", type=float, default=540.0, help="the whole suite's wall-clock budget")
    parser.add_argument("--no-install", action="store_true", help="never pip install sglang")
    parser.add_argument("--disable-cuda-graph", action="store_true", help="faster server start, slower decode")
    args = parser.parse_args()
    suite = Suite(args)
    start = time.monotonic()
    environment(suite)
    install(suite)
    model_dir = model(suite)
    server = None
    try:
        if not suite.skip_without_gpu("server") and model_dir is not None:
            candidate = Server(suite, model_dir)
            server = candidate if candidate.start() else None
            if server is None:
                candidate.stop()
        generation_smoke(suite, server, model_dir)
        kernels(suite)
        train(suite, server, model_dir)
    finally:
        if server is not None:
            server.stop()
    suite.report["wall_s"] = round(time.monotonic() - start, 1)
    failed = [name for name, step in suite.report["steps"].items() if step["status"] == "failed"]
    suite.report["failed"] = failed
    path = suite.out / "gpu_suite.json"
    path.write_text(json.dumps(suite.report, indent=2, default=str))
    print(f"[gpu_suite] {'FAILED: ' + ', '.join(failed) if failed else 'OK'} in {suite.report['wall_s']} s -> {path}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
