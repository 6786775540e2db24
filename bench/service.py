"""Continuous batching vs batch-at-a-time: the same request stream through the service and LocalGenerator.

Requests arrive as a Poisson stream (fixed seed) with lognormal output lengths and no stop tokens, so both
generators produce exactly the same number of tokens. ``local``: ``LocalGenerator`` in this process (a request
that arrives while a batch decodes waits for the whole batch). ``service``: the GenerationService in its own
process over ZeroMQ (it joins the running batch at the next step). Both use one torch thread.

    python bench/service.py --json bench/results/service.json       # 48 requests, about a minute on 2 cores
    python bench/service.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from turnrl.config.generation import ServiceConfig
from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.generation.service_client import ServiceGenerator, ServiceProcess
from turnrl.models.loading import load_policy
from turnrl.protocol import GenerateRequest, SamplingParams


def workload(n: int, mean_gap_s: float, seed: int, vocab: int):
    rng = random.Random(seed)
    at, stream = 0.0, []
    for i in range(n):
        at += rng.expovariate(1 / mean_gap_s)
        new = min(128, max(4, round(math.exp(rng.gauss(math.log(24), 0.8)))))
        ids = [rng.randrange(5, vocab) for _ in range(rng.randint(16, 64))]
        stream.append((at, GenerateRequest(request_id=f"r{i}", input_ids=ids,
                                           sampling=SamplingParams(max_new_tokens=new))))
    return stream


async def replay(generator, stream) -> dict:
    start = time.perf_counter()
    latencies: list[float] = []

    async def one(at: float, request: GenerateRequest) -> int:
        await asyncio.sleep(max(0.0, at - (time.perf_counter() - start)))
        sent = time.perf_counter()
        result = await generator.generate(request)
        latencies.append(time.perf_counter() - sent)
        return len(result.output_ids)

    tokens = sum(await asyncio.gather(*(one(at, r) for at, r in stream)))
    wall = time.perf_counter() - start
    latencies.sort()
    return {"wall_s": round(wall, 3), "tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
            "latency_p50_s": round(statistics.median(latencies), 3),
            "latency_p90_s": round(latencies[int(0.9 * (len(latencies) - 1))], 3),
            "latency_mean_s": round(statistics.fmean(latencies), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--mean-gap-ms", type=float, default=40.0)
    parser.add_argument("--model", type=Path, help="model directory (default: the tiny smoke model)")
    parser.add_argument("--quick", action="store_true", help="16 requests")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    n = 16 if args.quick else args.requests
    workdir = Path(tempfile.mkdtemp(prefix="turnrl-bench-service-"))
    if args.model is None:
        from generation_smoke import build_model

        args.model = build_model(workdir / "policy")
    torch.set_num_threads(1)
    model, tokenizer = load_policy(args.model)
    stream = workload(n, args.mean_gap_ms / 1000, seed=0, vocab=len(tokenizer))

    local = LocalGenerator(model, tokenizer.pad_token_id, kv_cache_tokens=0)

    async def run_local():
        try:
            return await replay(local, stream)
        finally:
            await local.close()

    rows = {"local": asyncio.run(run_local())}
    config = ServiceConfig(model_path=str(args.model), address=f"ipc://{workdir}/bench.sock", torch_threads=1,
                           max_running=256)
    with ServiceProcess(config):
        client = ServiceGenerator(config.address)

        async def run_service():
            try:
                return await replay(client, stream)
            finally:
                await client.close()

        rows["service"] = asyncio.run(run_service())
    ratio = {"tokens_per_s_ratio": round(rows["service"]["tokens_per_s"] / rows["local"]["tokens_per_s"], 2),
             "latency_p50_ratio": round(rows["local"]["latency_p50_s"] / rows["service"]["latency_p50_s"], 2)}
    print(f"{n} requests, Poisson arrivals every {args.mean_gap_ms} ms on average, lognormal lengths (median 24)")
    print(f"{'mode':<10}" + "".join(f"{k:>16}" for k in rows["local"]))
    for mode, row in rows.items():
        print(f"{mode:<10}" + "".join(f"{v:>16}" for v in row.values()))
    print(f"service/local tokens/s: {ratio['tokens_per_s_ratio']}x; local/service median latency: "
          f"{ratio['latency_p50_ratio']}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"requests": n, "mean_gap_ms": args.mean_gap_ms, **rows, **ratio}, indent=2))


if __name__ == "__main__":
    main()
