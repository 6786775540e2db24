"""From ``RolloutBenchConfig`` to a ``BenchPlan``: the tasks, the envs, the model and tokenizer, the generator.

Invariants:
- everything that can be checked before work starts is checked first, and fails with ``ValueError`` in one line:
  an unknown family or option, an unreachable env server or SGLang server, a model path that is not a model;
- the tasks are the family's first train items (cycled when more episodes are asked for), or items
  ``0..episodes-1`` of a remote server; both modes run exactly these;
- with no ``--model`` the policy is the embedded tiny model, untrained, with a tokenizer fitted to the env's own
  text (random valid-action episodes where the env lists its actions, else first observations): the figures
  measure the engine and the env, not a trained policy.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx

from turnrl.bench.run import BenchPlan, EnvSource
from turnrl.config.bench import RolloutBenchConfig
from turnrl.config.envs import EnvWorkerConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.config.generation import GeneratorConfig
from turnrl.engine.generation.serving import open_generator
from turnrl.engine.training.warmup import random_episodes
from turnrl.envs.base import BlockingEnv, Env
from turnrl.envs.http.client import PROTOCOLS, HttpEnv
from turnrl.envs.registry import get_env_spec, make_env
from turnrl.envs.zmq.pool import EnvWorkerPool
from turnrl.errors import HttpEnvError
from turnrl.models.chat import ChatFormat
from turnrl.models.loading import check_model_dir, load_policy
from turnrl.models.tiny import build_tiny_model
from turnrl.models.tokenizer import train_tokenizer
from turnrl.protocol import Task

REMOTE_TURN_CAP = 10
CORPUS_ITEMS = 16


def check_reachable(url: str, what: str, timeout_s: float = 5.0) -> None:
    """Any HTTP answer will do; no answer at all is a one-line ``ValueError``."""
    try:
        httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ValueError(f"cannot reach {what} at {url} ({type(exc).__name__}: {exc or 'no answer'})") from None


def bench_tasks(config: RolloutBenchConfig) -> list[Task]:
    if config.env_url is not None:
        return [Task(env="remote", item_id=i, group=i) for i in range(config.episodes)]
    train = get_env_spec(config.env).splits.train
    count = min(len(train), config.episodes)
    return [Task(env=config.env, item_id=int(train[i % count]), group=i) for i in range(config.episodes)]


def _remote_env(config: RolloutBenchConfig) -> HttpEnv:
    return HttpEnv(config.env_url, protocol=config.env_protocol, family="remote", timeout_s=60.0)


async def _observations(make: Callable[[], Env], items: list[int]) -> list[str]:
    texts = []
    env = make()
    try:
        for item in items:
            texts.append(await env.reset(item))
    finally:
        await env.close()
    return texts


def env_corpus(config: RolloutBenchConfig, items: list[int]) -> list[str]:
    """Text of the env for fitting the embedded model's tokenizer."""
    if config.env_url is not None:
        try:
            return asyncio.run(_observations(lambda: _remote_env(config), items))
        except (HttpEnvError, httpx.HTTPError) as exc:
            raise ValueError(f"the env server at {config.env_url} failed: {exc}") from None
    env = make_env(config.env, **config.env_options)
    texts = [env.system_prompt]
    if isinstance(env, BlockingEnv):
        try:
            for episode in random_episodes(env, items, 3, seed=config.seed):
                texts += [*episode.observations, *episode.replies]
            env.close_sync()
            return texts
        except NotImplementedError:
            pass
    texts += asyncio.run(_observations(lambda: env, items))
    return texts


def policy(config: RolloutBenchConfig, tasks: list[Task]):
    """(model, tokenizer): the given model directory, or the embedded tiny model (untrained)."""
    if config.model is not None:
        model, tokenizer = load_policy(check_model_dir(config.model))
        return model, tokenizer
    items = sorted({t.item_id for t in tasks})[:CORPUS_ITEMS]
    tokenizer = train_tokenizer(env_corpus(config, items), vocab_size=600)
    model = build_tiny_model(tokenizer, "tiny", max_positions=4096, seed=config.seed).eval()
    return model, tokenizer


def env_source(config: RolloutBenchConfig) -> EnvSource:
    if config.env_url is not None:

        async def remote():
            return lambda: _remote_env(config)

        return EnvSource(open=remote)
    if config.env_workers:
        workers: list[EnvWorkerPool] = []

        async def start():
            workers.append(await EnvWorkerPool(EnvWorkerConfig(workers=config.env_workers)).start())
            return lambda: workers[0].env(config.env, **config.env_options)

        async def stop():
            for pool in workers:
                await pool.close()

        return EnvSource(open=start, close=stop)

    async def local():
        return lambda: make_env(config.env, **config.env_options)

    return EnvSource(open=local)


def build_plan(config: RolloutBenchConfig) -> BenchPlan:
    """Check everything, then build the model and the plan (the slow part comes after the checks)."""
    if config.env_url is not None:
        if config.env_protocol not in PROTOCOLS:
            raise ValueError(f"unknown --env-protocol {config.env_protocol!r}; choose from: {', '.join(PROTOCOLS)}")
        check_reachable(config.env_url, "the env server")
        turn_cap = config.max_turns or REMOTE_TURN_CAP
    else:
        spec = get_env_spec(config.env)
        try:
            probe_env = make_env(config.env, **config.env_options)
        except TypeError as exc:
            raise ValueError(f"bad --env-option for {config.env}: {exc}") from None
        turn_cap = config.max_turns or spec.default_turn_cap
        asyncio.run(probe_env.close())
    for url in config.sglang_urls:
        check_reachable(url, "the SGLang server")
    if config.model is not None:
        check_model_dir(config.model)
    tasks = bench_tasks(config)
    model, tokenizer = policy(config, tasks)
    chat = ChatFormat(tokenizer)
    staging = Path(tempfile.mkdtemp(prefix="turnrl-bench-"))
    serving = GeneratorConfig(kind=config.generator, urls=config.sglang_urls, max_running=config.concurrency)

    async def generator():
        return await open_generator(
            serving,
            model,
            tokenizer,
            staging,
            seed=config.seed,
            max_batch=config.concurrency,
            kv_cache_tokens=2_000_000,
        )

    episode = EpisodeConfig(
        turn_cap=turn_cap,
        max_new_tokens=config.max_new_tokens,
        max_total_tokens=max(4096, (config.max_new_tokens + 256) * (turn_cap + 1)),
    )
    where = config.env_url or " ".join([config.env, *(f"{k}={v}" for k, v in config.env_options.items())])
    describe = {
        "env": where,
        "generator": config.generator + (f" {','.join(config.sglang_urls)}" if config.sglang_urls else ""),
        "model": config.model or "embedded tiny (untrained)",
        "env_workers": config.env_workers,
        "episodes": config.episodes,
        "concurrency": config.concurrency,
        "turn_cap": turn_cap,
        "max_new_tokens": config.max_new_tokens,
        "time_limit_s": config.time_limit_s,
        "repeats": config.repeats,
    }
    return BenchPlan(
        name=config.env or "remote",
        tasks=tasks,
        envs=lambda: env_source(config),
        generator=generator,
        chat=chat,
        episode=episode,
        concurrency=config.concurrency,
        modes=config.modes,
        time_limit_s=config.time_limit_s,
        repeats=config.repeats,
        describe=describe,
        cleanup=lambda: shutil.rmtree(staging, ignore_errors=True),
    )
