"""SGLangGenerator at first contact with servers that behave as SGLang 0.5.23 does (``fake_sglang``).

Readiness (503 while loading), connection errors retried, request ids unique across clients, updates under every
pause mode (the flush SGLang refuses while requests hold their cache), per-token versions from the reply's spans,
aborted requests resumed from their partial output, failed or partial updates rolled back or reported.
"""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest

from tests.generation.fake_sglang import FakeSGLang
from turnrl.config.generation import SGLangConfig, SGLangOptions
from turnrl.engine.generation.sglang import SGLangGenerator
from turnrl.errors import SGLangError
from turnrl.protocol import GenerateRequest, SamplingParams

FAST = SGLangOptions(retry_backoff_s=0.01, ready_timeout_s=30)


@pytest.fixture()
def servers():
    fakes = [FakeSGLang(), FakeSGLang()]
    yield fakes
    for fake in fakes:
        fake.close()


def _gen(servers, **kwargs) -> SGLangGenerator:
    options = kwargs.pop("options", FAST)
    return SGLangGenerator(SGLangConfig(urls=[s.url for s in servers], options=options, **kwargs))


def _req(rid: str, max_new: int = 6, session: str | None = None, group: str | None = None) -> GenerateRequest:
    return GenerateRequest(
        request_id=rid,
        input_ids=[5, 9, 2, len(rid)],
        session_id=session,
        group_key=group,
        sampling=SamplingParams(temperature=1.0, max_new_tokens=max_new),
    )


async def _until(predicate, what: str) -> None:
    for _ in range(3000):  # a hang guard only: each check is an event on the server's side
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_readiness_waits_for_health_generate_and_times_out_clearly(servers):
    servers[0].loading_polls = 3
    gen = _gen(servers)
    try:
        await gen.http.wait_ready(gen.servers, poll_s=0.01)
        assert servers[0].loading_polls == 0  # it polled through the 503s
        servers[1].loading_polls = 10**9
        slow = _gen(servers, options=SGLangOptions(ready_timeout_s=0.2))
        with pytest.raises(SGLangError, match=rf"not ready after 0.2 s.*{servers[1].url} \(HTTP 503\)"):
            await slow.http.wait_ready(slow.servers, poll_s=0.01)
        await slow.close()
    finally:
        await gen.close()


async def test_a_server_older_than_the_pinned_version_is_refused_at_readiness(servers):
    gen = _gen(servers)
    try:
        await gen.wait_ready(poll_s=0.01)  # 0.5.23 on both
        servers[0].version = "0.5.24.post1"
        servers[1].version = "0.4.6.post5"
        with pytest.raises(SGLangError, match=rf"{servers[1].url} runs SGLang 0.4.6.post5: .*>= 0.5.23"):
            await gen.wait_ready(poll_s=0.01)
    finally:
        await gen.close()


async def test_dropped_connections_are_retried_with_backoff_then_reported(servers):
    gen = _gen(servers[:1], options=SGLangOptions(retries=2, retry_backoff_s=0.01))
    try:
        servers[0].drop_next = 2
        result = await gen.generate(_req("a"))
        assert result.output_ids and gen.http.retried == 2
        servers[0].drop_next = 3
        with pytest.raises(SGLangError, match=r"/generate: .*after 3 attempts"):
            await gen.generate(_req("b"))
        assert (await gen.generate(_req("c"))).output_ids  # and it goes on
    finally:
        await gen.close()
    with pytest.raises(ValueError, match="5 s keep-alive"):
        SGLangOptions(keepalive_expiry_s=5.0)


async def test_each_server_has_its_own_pool_with_short_keepalive(servers):
    gen = _gen(servers, options=SGLangOptions(max_connections_per_server=3, keepalive_expiry_s=2.0))
    try:
        await asyncio.gather(*(gen.generate(_req(f"r{i}", session=f"s{i}")) for i in range(6)))
        clients = {url: gen.http.client(url) for url in gen.servers}
        assert len({id(c) for c in clients.values()}) == 2
        for client in clients.values():
            pool = client._transport._pool
            assert pool._max_connections == 3 and pool._keepalive_expiry == 2.0
    finally:
        await gen.close()


OTHER_PROCESS = """
import asyncio, sys
from turnrl.config.generation import SGLangConfig
from turnrl.engine.generation.sglang import SGLangGenerator
from turnrl.protocol import GenerateRequest

async def main():
    gen = SGLangGenerator(SGLangConfig(urls=[sys.argv[1]]))
    result = await gen.generate(GenerateRequest(request_id="hold-same", input_ids=[5, 9, 2, 9]))
    await gen.close()
    print(result.finish_reason)

asyncio.run(main())
"""


async def test_request_ids_never_collide_across_processes_sharing_a_server(servers):
    """Training and ``turnrl eval`` on one server: the same request id from two processes, both running at once."""
    one = _gen(servers[:1])
    servers[0].hold.clear()
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", OTHER_PROCESS, servers[0].url, stdout=asyncio.subprocess.PIPE
    )
    try:
        mine = asyncio.create_task(one.generate(_req("hold-same")))
        await _until(lambda: len(servers[0].running) == 2, "both processes' requests running")
        servers[0].release_hold()
        out, _ = await asyncio.wait_for(other.communicate(), 120)  # a hang guard only
        assert other.returncode == 0 and out.decode().strip() in ("stop", "length")
        assert (await mine).finish_reason in ("stop", "length")
        rids = [body.rid for path, body in servers[0].calls if path == "/generate"]
        assert len(set(rids)) == 2 and all(r.endswith("-hold-same-0") for r in rids)
        # the server itself refuses a duplicate, as SGLang does
        servers[0].hold.clear()
        body = one.payload(_req("x"), rid="hold-dup")
        async with httpx.AsyncClient() as client:
            first = asyncio.create_task(client.post(servers[0].url + "/generate", json=body))
            await _until(lambda: "hold-dup" in servers[0].running, "the first request running")
            second = await client.post(servers[0].url + "/generate", json=body)
            servers[0].release_hold()
            assert second.status_code == 400 and "duplicate request ID" in second.text
            assert (await first).status_code == 200
    finally:
        await one.close()
        if other.returncode is None:
            other.kill()


@pytest.mark.parametrize("in_flight", ["continue", "abort"])
async def test_an_update_mid_request_stamps_each_token_and_loses_nothing(servers, in_flight):
    """continue: retracted, decoded on under the new weights; abort: partial output resumed after the update."""
    servers[0].hold.clear()
    servers[0].hold_tokens = 2
    gen = _gen(servers[:1], in_flight=in_flight)
    try:
        task = asyncio.create_task(gen.generate(_req("hold-x", max_new=6)))
        await _until(lambda: servers[0].running, "the request running")
        await asyncio.sleep(0.05)  # it has sampled its first two tokens and waits on the hold
        assert await gen.update_weights("/ckpt/1") == 1
        servers[0].release_hold()
        result = await task
        assert len(result.output_ids) == 6 and result.finish_reason == "length"
        assert result.versions == [0, 0, 1, 1, 1, 1]
        modes = [body.mode for path, body in servers[0].calls if path == "/pause_generation"]
        sent = [body for path, body in servers[0].calls if path == "/generate"]
        if in_flight == "continue":
            assert modes == ["retract"] and len(sent) == 1 and gen.resumed == 0
        else:
            assert modes == ["abort"] and len(sent) == 2 and gen.resumed == 1
            assert sent[1].input_ids == sent[0].input_ids + result.output_ids[:2]  # resumed, not redone
            assert sent[1].sampling_params.max_new_tokens == 4
        flushes = [body.flush_cache for path, body in servers[0].calls if path == "/update_weights_from_disk"]
        assert flushes == [True]
    finally:
        await gen.close()


async def test_in_place_pause_updates_without_the_refused_flush_and_flushes_after_resume(servers):
    servers[0].hold.clear()
    servers[0].hold_tokens = 1
    gen = _gen(servers[:1])
    try:
        task = asyncio.create_task(gen.generate(_req("hold-y", max_new=3)))
        await _until(lambda: servers[0].running, "the request running")
        await gen.pause("in_place")
        assert await gen.update_weights("/ckpt/1") == 1  # SGLang would refuse the flush: it is not asked
        assert [b.flush_cache for p, b in servers[0].calls if p == "/update_weights_from_disk"] == [False]
        assert servers[0].calls[-1][0] == "/update_weights_from_disk"  # still paused: the caller resumes
        servers[0].release_hold()
        await gen.resume()
        result = await task
        assert result.versions == [0, 1, 1]
        await _until(lambda: not servers[0].running, "the request gone")
        await gen.weights.flush_pending_caches()
        assert not gen.weights.flush_pending and ("/flush_cache" in [p for p, _ in servers[0].calls])
    finally:
        await gen.close()


async def test_a_refused_flush_counts_as_updated_and_is_retried(servers):
    """SGLang: HTTP 400 "Weights were updated, but the cache was not flushed": the weights are new."""
    servers[0].hold.clear()
    servers[0].hold_tokens = 1
    gen = _gen(servers[:1])
    try:
        task = asyncio.create_task(gen.generate(_req("hold-z", max_new=2)))
        await _until(lambda: servers[0].running, "the request running")
        gen._paused_by_caller = "abort"  # as if paused elsewhere in a mode that keeps requests running
        await gen.weights.from_disk("/ckpt/1", 1, flush_cache=True)
        assert gen.weights.flush_pending == {servers[0].url} and gen.weights.inconsistent is None
        servers[0].release_hold()
        await task
        await _until(lambda: not servers[0].running, "the request gone")
        await gen.weights.flush_pending_caches()
        assert not gen.weights.flush_pending
    finally:
        await gen.close()


def test_per_token_versions_come_from_the_spans(servers):
    gen = _gen(servers[:1])
    meta = {
        "finish_reason": {"type": "length"},
        "output_token_logprobs": [[-0.1, t, None] for t in (4, 5, 6, 7, 8)],
        "weight_version": "4",
        "weight_versions": [{"version": "3", "start": 0, "end": 2}, {"version": "4", "start": 2, "end": 5}],
    }
    assert gen.parse("x", {"meta_info": meta}).versions == [3, 3, 4, 4, 4]
    meta["weight_versions"] = [{"version": "default", "start": 0, "end": 5}]
    assert gen.parse("x", {"meta_info": meta}).versions == [0] * 5  # launch weights: the initial version
    meta["weight_versions"] = [{"version": "3", "start": 0, "end": 2}, {"version": "4", "start": 3, "end": 5}]
    with pytest.raises(SGLangError, match="do not tile"):
        gen.parse("x", {"meta_info": meta})
    meta["weight_versions"] = [{"version": "3", "begin": 0}]
    with pytest.raises(SGLangError, match="bad weight_versions span"):
        gen.parse("x", {"meta_info": meta})


async def test_a_request_this_client_aborts_is_not_resumed(servers):
    servers[0].hold.clear()
    servers[0].hold_tokens = 2
    gen = _gen(servers[:1])
    try:
        task = asyncio.create_task(gen.generate(_req("hold-a", max_new=5)))
        await _until(lambda: servers[0].running, "the request running")
        await asyncio.sleep(0.05)
        await gen.abort("hold-a")
        result = await task
        assert result.finish_reason == "abort" and len(result.output_ids) == 2 and gen.resumed == 0
    finally:
        await gen.close()


async def test_a_failed_update_is_rolled_back_everywhere_or_reported(servers):
    gen = _gen(servers)
    try:
        assert await gen.update_weights("/ckpt/1") == 1
        servers[1].fail_update = True
        with pytest.raises(SGLangError, match=r"failed on 1 of 2 servers.*shapes differ.*rolled back to version 1"):
            await gen.update_weights("/ckpt/2")
        assert gen.weight_version == 1
        assert [s.weight_version for s in servers] == ["1", "1"]
        assert servers[0].calls[-2][1].model_path == "/ckpt/1"  # reloaded the previous directory
        assert (await gen.generate(_req("after"))).versions[0] == 1

        servers[0].fail_update = True
        with pytest.raises(SGLangError, match=r"failed on every server.*HTTP 400.*shapes differ"):
            await gen.update_weights("/ckpt/3")
        assert gen.weight_version == 1
    finally:
        await gen.close()


async def test_a_partial_update_with_nothing_to_roll_back_to_stops_generation_until_fixed(servers):
    gen = _gen(servers)
    try:
        servers[1].fail_update = True
        with pytest.raises(SGLangError, match=r"no earlier directory.*different weights"):
            await gen.update_weights("/ckpt/1")
        with pytest.raises(SGLangError, match="hold different weights"):
            await gen.generate(_req("refused"))
        servers[1].fail_update = False
        assert await gen.update_weights("/ckpt/1") == 1
        assert (await gen.generate(_req("served"))).output_ids
    finally:
        await gen.close()


async def test_colocated_memory_is_resumed_around_an_update(servers, tmp_path):
    gen = _gen(servers[:1], options=SGLangOptions(colocated=True))
    try:
        await gen.release_memory()
        assert servers[0].released
        await gen.update_weights("/ckpt/1")
        paths = [p for p, _ in servers[0].calls]
        assert paths == [
            "/release_memory_occupation",
            "/resume_memory_occupation",
            "/pause_generation",
            "/update_weights_from_disk",
            "/continue_generation",
            "/resume_memory_occupation",
        ]
        tags = [b.tags for p, b in servers[0].calls if p == "/resume_memory_occupation"]
        assert tags == [["weights"], ["kv_cache"]] and not servers[0].released
    finally:
        await gen.close()
