"""Beyond one process: learner tokens/s at 1 and 2 ranks, and weight-sync time per GB through each path here.

Learner: the same batch of random trajectories (GRPO, 2 mini-batches, reference KL) through ``Learner`` in one
process and through ``ShardedLearner`` under ``torchrun`` at 1 and 2 ranks (gloo, one torch thread per rank);
figures: the median seconds of ``update`` over ``--updates`` timed updates after one untimed, and tokens/s = the
batch's tokens (prompt and observation tokens included: every token goes through the forward) / that median.
Repeats interleave the three modes (order rotating), each repeat a fresh process per mode.

Weight sync: a Qwen2-architecture model of ``--sync-mb`` MB (float32) pushed ``--syncs`` times through every
path available on this machine: the in-process generator's own copy (``LocalGenerator``, copy_weights), the
generation service over its ZeroMQ socket (raw tensors) and from disk (a saved model directory it reloads), and
the sharded learner's gather of its full weights at 2 ranks (``full_state_dict``, what rank 0 then sends).
The socket path sends the whole model as one frame: the bench raises the service's 64 MiB default frame limit.
Figures: median seconds per push, and seconds per GB. SGLang's NCCL and CUDA-IPC paths need a GPU: the GPU
suite fills them in.

    python bench/scale.py --json bench/results/scale.json      # about 7 min on 2 loaded cores
    python bench/scale.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _tokenizer():
    from turnrl.models.tokenizer import train_tokenizer

    words = ["go to the red ball", "turn left", "pick up the grey key", "open the yellow door", "move forward"]
    return train_tokenizer(words * 40, 600)


def _batch(vocab: int, count: int, seed: int):
    sys.path.insert(0, str(REPO))
    from tests.distributed.jobs import random_trajectories

    return random_trajectories(vocab, count, seed)


LEARNER = dict(lr=1e-4, lr_warmup_steps=0, minibatches=2, micro_batch_tokens=4096, kl_coef=0.01)


# ---- learner: one mode in a fresh process ---------------------------------------------------------------------
def learner_worker(spec_path: str) -> None:
    import msgspec
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from turnrl.config.algo import LearnerConfig
    from turnrl.protocol import Trajectory

    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], torch_dtype=torch.float32).eval()
    trajectories = msgspec.msgpack.decode(Path(spec["batch"]).read_bytes(), type=list[Trajectory])
    config = msgspec.convert(LEARNER, LearnerConfig)
    sharded = spec["mode"] != "single"
    if sharded:
        from turnrl.engine.distributed.learner import ShardedLearner
        from turnrl.engine.distributed.mesh import close_mesh, exit_without_finalizing, init_mesh

        learner = ShardedLearner(model, config, spec["pad"], mesh=init_mesh())
    else:
        from turnrl.engine.training.learner import Learner

        learner = Learner(model, config, spec["pad"])
    times, gather = [], []
    for i in range(spec["updates"] + 1):
        start = time.perf_counter()
        learner.update(trajectories)
        if i:
            times.append(time.perf_counter() - start)
        if sharded:
            start = time.perf_counter()
            learner.full_state_dict()
            if i:
                gather.append(time.perf_counter() - start)
    if not sharded or dist.get_rank() == 0:
        Path(spec["out"]).write_text(json.dumps({"update_s": times, "gather_s": gather}))
    if sharded:
        close_mesh()
        exit_without_finalizing(0)


def run_learner_mode(tmp: Path, mode: str, model_dir: Path, batch: Path, pad: int, updates: int, tag: str) -> dict:
    out = tmp / f"{tag}.json"
    spec = dict(mode=mode, model_dir=str(model_dir), batch=str(batch), pad=pad, updates=updates, out=str(out))
    spec_path = tmp / f"{tag}.spec.json"
    spec_path.write_text(json.dumps(spec))
    if mode == "single":
        cmd = [sys.executable, str(HERE), "--learner-worker", str(spec_path)]
    else:
        ranks = {"1 rank": 1, "2 ranks": 2}[mode]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
        cmd += [str(HERE), "--learner-worker", str(spec_path)]
    subprocess.run(cmd, env=ENV, check=True, capture_output=True, timeout=1200)
    return json.loads(out.read_text())


def bench_learner(args, tmp: Path) -> tuple[list[dict], dict]:
    import msgspec

    from turnrl.models import save_policy
    from turnrl.models.tiny import build_tiny_model

    tok = _tokenizer()
    save_policy(build_tiny_model(tok, args.preset, max_positions=2048, seed=0), tok, tmp / "model")
    trajectories = _batch(len(tok), args.rows, seed=1)
    batch = tmp / "batch.msgpack"
    batch.write_bytes(msgspec.msgpack.encode(trajectories))
    tokens = sum(len(t.token_ids) for t in trajectories)
    modes = ["single", "1 rank", "2 ranks"]
    samples: dict[str, list[float]] = {m: [] for m in modes}
    gathers: list[float] = []
    for r in range(args.repeats):
        for m in modes[r % 3 :] + modes[: r % 3]:
            got = run_learner_mode(tmp, m, tmp / "model", batch, tok.pad_token_id, args.updates, f"l{r}{m[0]}")
            samples[m].append(statistics.median(got["update_s"]))
            if m == "2 ranks":
                gathers += got["gather_s"]
    rows = []
    for m in modes:
        median = statistics.median(samples[m])
        rows.append({"mode": m, "update_s": median, "tokens_per_s": tokens / median, "repeats": samples[m]})
    base = rows[0]["update_s"]
    for row in rows:
        row["speedup_vs_single"] = base / row["update_s"]
    params = sum(p.numel() for p in build_tiny_model(tok, args.preset, 2048, 0).parameters())
    return rows, {"tokens_per_update": tokens, "rows": args.rows, "parameters": params, "gather_2_ranks": gathers}


# ---- weight sync ------------------------------------------------------------------------------------------------
def _sync_model(megabytes: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    hidden, layers = 512, 1
    per_layer = 12 * hidden * hidden  # attention 4 h^2 + MLP (3 x h x 2.67h) ~ 12 h^2 parameters
    vocab = 8192
    layers = max(1, round((megabytes * 2**20 / 4 - vocab * hidden) / per_layer))
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(hidden * 8 / 3),
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        tie_word_embeddings=True,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).eval()


async def _sync_paths(args, tmp: Path, model, tokenizer) -> dict[str, list[float]]:
    from turnrl.config.generation import ServiceConfig
    from turnrl.engine.generation.local import LocalGenerator
    from turnrl.engine.generation.service_client import ServiceGenerator, ServiceProcess
    from turnrl.models import save_policy

    save_policy(model, tokenizer, tmp / "sync_model")
    out: dict[str, list[float]] = {"in-process copy": [], "service socket": [], "service from disk": []}
    local = LocalGenerator(model, tokenizer.pad_token_id, copy_weights=True, use_thread=False)
    address = f"ipc://{tmp}/sync.sock"
    # the socket path carries the whole model in one frame: raise the default 64 MiB frame limit on both ends
    frame = 2**31 - 1
    config = ServiceConfig(model_path=str(tmp / "sync_model"), address=address, torch_threads=1, max_frame_bytes=frame)
    process = ServiceProcess(config)
    await asyncio.to_thread(process.start)
    service = ServiceGenerator(address, owned_process=process, max_frame_bytes=frame)
    try:
        for i in range(args.syncs + 1):
            for name in out:
                start = time.perf_counter()
                if name == "in-process copy":
                    await local.push_weights(model, tokenizer, tmp)
                elif name == "service socket":
                    await service.push_weights(model, tokenizer, tmp)
                else:
                    await asyncio.to_thread(save_policy, model, tokenizer, tmp / "staging")
                    await service.update_weights(path=str(tmp / "staging"))
                if i:
                    out[name].append(time.perf_counter() - start)
    finally:
        await service.close()
        await local.close()
    return out


def bench_sync(args, tmp: Path, gathers_small: list[float]) -> list[dict]:
    tok = _tokenizer()
    model = _sync_model(args.sync_mb)
    gigabytes = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**30
    times = asyncio.run(_sync_paths(args, tmp, model, tok))
    # the sharded gather of the same model at 2 ranks
    model.save_pretrained(tmp / "gather_model")
    import msgspec

    trajectories = _batch(len(tok), 4, seed=2)
    batch = tmp / "gather_batch.msgpack"
    batch.write_bytes(msgspec.msgpack.encode(trajectories))
    got = run_learner_mode(tmp, "2 ranks", tmp / "gather_model", batch, tok.pad_token_id, args.syncs, "gather")
    times["FSDP gather, 2 ranks"] = got["gather_s"]
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        rows.append(
            {"path": name, "push_s": median, "s_per_gb": median / gigabytes, "gb": gigabytes, "n": len(samples)}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learner-worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--sync-mb", type=int, default=256)
    parser.add_argument("--syncs", type=int, default=3)
    args = parser.parse_args()
    if args.learner_worker:
        learner_worker(args.learner_worker)
        return
    if args.quick:
        args.repeats, args.updates, args.rows, args.sync_mb, args.syncs = 1, 2, 16, 64, 2
    with tempfile.TemporaryDirectory(prefix="turnrl-scale-") as d:
        tmp = Path(d)
        learner_rows, info = bench_learner(args, tmp)
        sync_rows = bench_sync(args, tmp, info["gather_2_ranks"])
    print(f"\nlearner: {info['parameters']:,} parameters, {info['tokens_per_update']} tokens per update")
    print("| mode | update s (median) | tokens/s | vs single process |")
    print("|---|---|---|---|")
    for r in learner_rows:
        print(f"| {r['mode']} | {r['update_s']:.3f} | {r['tokens_per_s']:.0f} | {r['speedup_vs_single']:.2f}x |")
    print(f"\nweight sync: {sync_rows[0]['gb'] * 1024:.0f} MB of float32 weights")
    print("| path | s per push (median) | s per GB |")
    print("|---|---|---|")
    for r in sync_rows:
        print(f"| {r['path']} | {r['push_s']:.3f} | {r['s_per_gb']:.2f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {"learner": learner_rows, "learner_info": info, "weight_sync": sync_rows, "args": vars(args)}
        Path(args.json).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
