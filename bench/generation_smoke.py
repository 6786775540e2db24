"""Generation smoke run: a short BabyAI rollout through a generator, checked token in / token out.

Runs N episodes through the GenerationService (ZeroMQ, ``--generator service``, CPU here) or through SGLang
servers (``--generator sglang --urls ...``, started by ``bench/gpu_smoke.sh`` on a GPU machine), then recomputes
the log-prob of every sampled token with the same weights in transformers and reports the largest difference;
then updates the weights (same files, new version) and checks that later tokens carry the new version.

    python bench/generation_smoke.py --generator service --json /tmp/smoke.json
    python bench/generation_smoke.py --build-model DIR          # only write the tiny model directory
    python bench/generation_smoke.py --generator sglang --model DIR --urls http://127.0.0.1:30000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from turnrl.config.episode import EpisodeConfig
from turnrl.engine.rollout.run import EnvPool, run_episodes
from turnrl.engine.training.batch import pack, policy_logprobs
from turnrl.engine.training.warmup import random_episodes
from turnrl.envs.babyai import BabyAIEnv
from turnrl.models.chat import ChatFormat
from turnrl.models.loading import load_policy, save_policy
from turnrl.models.tiny import build_tiny_model
from turnrl.models.tokenizer import train_tokenizer
from turnrl.protocol import Task


def build_model(path: Path) -> Path:
    """An untrained tiny policy with a tokenizer trained on BabyAI text (no download, a few seconds)."""
    env = BabyAIEnv("GoToLocal")
    episodes = random_episodes(env, list(range(40)), 3, seed=0)
    corpus = [env.system_prompt] + [t for ep in episodes for t in ep.observations + ep.replies]
    tokenizer = train_tokenizer(corpus, vocab_size=1024)
    return save_policy(build_tiny_model(tokenizer, "tiny", max_positions=4096, seed=0), tokenizer, path)


def max_logprob_gap(model, trajectories, pad_id: int, temperature: float) -> float:
    batch = pack(trajectories, None, pad_id)
    with torch.no_grad():
        recomputed, _, _ = policy_logprobs(model, batch, temperature=temperature)
    return float(((recomputed - batch.old_logprobs).abs() * batch.loss_mask).max())


async def rollout(generator, chat, args, first_item: int):
    config = EpisodeConfig(
        turn_cap=args.turn_cap,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        generation_timeout_s=120.0,
    )
    tasks = [Task(env="babyai", item_id=first_item + i) for i in range(args.episodes)]
    start = time.perf_counter()
    trajectories = await run_episodes(tasks, EnvPool(lambda: BabyAIEnv("GoToLocal")), generator, chat, config)
    return trajectories, time.perf_counter() - start


async def smoke(args, model_dir: Path) -> dict:
    model, tokenizer = load_policy(model_dir)
    chat = ChatFormat(tokenizer)
    process = None
    if args.generator == "service":
        from turnrl.config.generation import ServiceConfig
        from turnrl.engine.generation.service_client import ServiceGenerator, ServiceProcess

        config = ServiceConfig(model_path=str(model_dir), address=f"ipc://{model_dir}/smoke.sock", torch_threads=1)
        process = ServiceProcess(config).start()
        generator = ServiceGenerator(config.address)
    else:
        from turnrl.config.generation import SGLangConfig
        from turnrl.engine.generation.sglang import SGLangGenerator

        generator = SGLangGenerator(SGLangConfig(urls=args.urls))
        await generator.wait_ready()  # /health_generate answers 503 while the server loads
    try:
        trajectories, seconds = await rollout(generator, chat, args, 0)
        version = await generator.update_weights(path=str(model_dir))
        after, _ = await rollout(generator, chat, args, 10_000)
    finally:
        await generator.close()
        if process is not None:
            process.stop()
    tokens = sum(t.num_policy_tokens for t in trajectories)
    later = {v for t in after for v, m in zip(t.versions, t.loss_mask, strict=True) if m}
    return {
        "generator": args.generator,
        "episodes": len(trajectories),
        "end_reasons": dict(Counter(t.end_reason for t in trajectories)),
        "policy_tokens": tokens,
        "wall_s": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "max_abs_logprob_gap": max_logprob_gap(model, trajectories, tokenizer.pad_token_id, args.temperature),
        "version_after_update": version,
        "versions_seen_after_update": sorted(later),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", choices=("service", "sglang"), default="service")
    parser.add_argument("--model", type=Path, help="model directory (default: build the tiny model in a tmp dir)")
    parser.add_argument("--build-model", type=Path, help="write the tiny model directory here and exit")
    parser.add_argument("--urls", nargs="+", default=["http://127.0.0.1:30000"])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--turn-cap", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed |log-prob gap|")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.build_model:
        print(build_model(args.build_model))
        return
    model_dir = args.model or build_model(Path(tempfile.mkdtemp(prefix="turnrl-smoke-")) / "policy")
    report = asyncio.run(smoke(args, model_dir))
    print(f"{'figure':<28} value")
    for key, value in report.items():
        print(f"{key:<28} {value}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    ok = report["max_abs_logprob_gap"] <= args.tolerance and report["versions_seen_after_update"] == [
        report["version_after_update"]
    ]
    print("SMOKE OK" if ok else "SMOKE FAILED")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
