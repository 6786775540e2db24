"""The SGLang backend against a contract: real HTTP servers that check request shapes and answer like SGLang.

The shapes follow SGLang's native API (``GenerateReqInput``, ``AbortReq``, ``PauseGenerationReqInput``,
``UpdateWeightFromDiskReqInput``): a field this client sends that SGLang does not define is a 400 here.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.generation.fake_sglang import FakeSGLang, UpdateFromDisk
from turnrl.config.generation import SGLangConfig, SGLangOptions
from turnrl.engine.generation.sglang import SGLangGenerator
from turnrl.errors import GenerationTimeout, SGLangError
from turnrl.protocol import GenerateRequest, SamplingParams


@pytest.fixture()
def servers():
    fakes = [FakeSGLang(), FakeSGLang()]
    yield fakes
    for fake in fakes:
        fake.close()


def _req(rid: str, session: str | None = None, max_new: int = 6, stop=(3,)) -> GenerateRequest:
    return GenerateRequest(
        request_id=rid,
        input_ids=[5, 9, 2, len(rid)],
        session_id=session,
        sampling=SamplingParams(temperature=0.8, top_p=1.0, max_new_tokens=max_new, stop_token_ids=tuple(stop)),
    )


async def test_generate_sends_documented_shape_and_reads_tokens_and_logprobs(servers):
    gen = SGLangGenerator(SGLangConfig(urls=[servers[0].url]))
    try:
        results = await asyncio.gather(*(gen.generate(_req(f"r{i}", max_new=4 + i)) for i in range(8)))
    finally:
        await gen.close()
    sent = {body.rid.split("-")[1]: body for path, body in servers[0].calls if path == "/generate"}
    assert set(sent) == {f"r{i}" for i in range(8)}
    for i, res in enumerate(results):
        body = sent[res.request_id]
        assert body.input_ids == [5, 9, 2, len(res.request_id)] and body.return_logprob
        assert body.sampling_params.temperature == 0.8 and body.sampling_params.stop_token_ids == [3]
        assert 1 <= len(res.output_ids) <= 4 + i and len(res.logprobs) == len(res.output_ids)
        assert res.versions == [0] * len(res.output_ids)
        if res.finish_reason == "stop":
            assert res.output_ids[-1] == 3
        else:
            assert res.finish_reason == "length" and len(res.output_ids) == 4 + i and 3 not in res.output_ids


async def test_sessions_stick_to_one_server_and_spread_across_servers(servers):
    gen = SGLangGenerator(SGLangConfig(urls=[s.url for s in servers]))
    try:
        for turn in range(3):
            await asyncio.gather(*(gen.generate(_req(f"e{e}-t{turn}", session=f"e{e}")) for e in range(6)))
        await gen.end_session("e0")
        assert "e0" not in gen._sessions
    finally:
        await gen.close()
    where = {}
    for index, server in enumerate(servers):
        for path, body in server.calls:
            if path == "/generate":
                where.setdefault(body.rid.split("-")[1], set()).add(index)
    assert all(len(places) == 1 for places in where.values()), where
    assert {next(iter(p)) for p in where.values()} == {0, 1}  # both servers used


async def test_abort_pause_continue_and_weight_update_reach_every_server(servers):
    gen = SGLangGenerator(SGLangConfig(urls=[s.url for s in servers]))
    try:
        servers[0].hold.clear()
        servers[1].hold.clear()
        held = asyncio.create_task(gen.generate(_req("hold-1", session="s")))
        arrived = lambda: any(path == "/generate" and "-hold-1-" in body.rid for s in servers for path, body in s.calls)  # noqa: E731
        await asyncio.wait_for(_until(arrived), 30)  # a hang guard: the request is held on its server now
        assert not held.done()
        await gen.abort("hold-1")
        result = await held
        assert result.finish_reason == "abort" and result.output_ids == []
        aborts = [(i, body.rid) for i, s in enumerate(servers) for path, body in s.calls if path == "/abort_request"]
        assert len(aborts) == 1 and "-hold-1-" in aborts[0][1]  # only the server running it

        await gen.pause("retract")
        await gen.resume()
        await gen.abort_all()
        for server in servers:
            paths = [path for path, _ in server.calls]
            assert paths[-3:] == ["/pause_generation", "/continue_generation", "/abort_request"]
            assert server.calls[-3][1].mode == "retract" and server.calls[-1][1].abort_all
        with pytest.raises(ValueError, match="mode"):
            await gen.pause("freeze")

        assert await gen.update_weights("/ckpt/step-1") == 1
        for server in servers:
            assert [path for path, _ in server.calls[-3:]] == [
                "/pause_generation",
                "/update_weights_from_disk",
                "/continue_generation",
            ]
            assert server.calls[-2][1] == UpdateFromDisk(model_path="/ckpt/step-1", weight_version="1")
        res = await gen.generate(_req("after"))
        assert gen.weight_version == 1 and res.versions == [1] * len(res.output_ids)
        servers[1].fail_update = True
        with pytest.raises(SGLangError, match="shapes differ"):
            await gen.update_weights("/ckpt/bad")
        assert gen.weight_version == 1
    finally:
        await gen.close()


async def test_bad_requests_bad_replies_and_timeouts_are_clear_errors(servers):
    gen = SGLangGenerator(SGLangConfig(urls=[servers[0].url], request_timeout_s=0.3))
    try:
        with pytest.raises(ValueError, match="allowed"):
            await gen.generate(GenerateRequest(request_id="c", input_ids=[1], allowed=[[1, 2]]))
        with pytest.raises(ValueError, match="input_ids"):
            await gen.generate(GenerateRequest(request_id="e", input_ids=[]))
        servers[0].break_reply = True
        with pytest.raises(SGLangError, match="disagree"):
            await gen.generate(_req("broken", stop=()))
        servers[0].break_reply = False
        with pytest.raises(SGLangError, match="unknown finish_reason"):
            gen.parse("x", {"meta_info": {"output_token_logprobs": [], "finish_reason": {"type": "exploded"}}})
        with pytest.raises(SGLangError, match="lacks"):
            gen.parse("x", {"text": "hi"})
        servers[0].hold.clear()
        with pytest.raises(GenerationTimeout):
            await gen.generate(_req("hold-slow"))
        assert any("-hold-slow-" in rid for rid in servers[0].aborted), "a timed-out request is aborted on its server"
        dead = SGLangGenerator(SGLangConfig(urls=["http://127.0.0.1:9"], options=SGLangOptions(retries=0)))
        with pytest.raises(SGLangError, match="/generate"):
            await dead.generate(_req("nobody"))
        assert not await dead.healthy()
        await dead.close()
        assert await gen.healthy()
    finally:
        await gen.close()
    with pytest.raises(ValueError, match="urls"):
        SGLangConfig(urls=[])
    with pytest.raises(ValueError, match="urls"):
        SGLangConfig(urls=["localhost:30000"])


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
