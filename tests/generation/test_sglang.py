"""The SGLang backend against a contract: real HTTP servers that check request shapes and answer like SGLang.

The shapes follow SGLang's native API (``GenerateReqInput``, ``AbortReq``, ``PauseGenerationReqInput``,
``UpdateWeightFromDiskReqInput``): a field this client sends that SGLang does not define is a 400 here.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

import msgspec
import pytest

from turnrl.config.generation import SGLangConfig
from turnrl.engine.generation.sglang import SGLangGenerator
from turnrl.errors import GenerationTimeout, SGLangError
from turnrl.protocol import GenerateRequest, SamplingParams


class _Sampling(msgspec.Struct, forbid_unknown_fields=True):
    max_new_tokens: int
    temperature: float
    top_p: float
    stop_token_ids: list[int]
    skip_special_tokens: bool
    no_stop_trim: bool


class _Generate(msgspec.Struct, forbid_unknown_fields=True):
    input_ids: list[int]
    sampling_params: _Sampling
    return_logprob: bool
    rid: str
    stream: bool


class _Abort(msgspec.Struct, forbid_unknown_fields=True):
    rid: str = ""
    abort_all: bool = False


class _Pause(msgspec.Struct, forbid_unknown_fields=True):
    mode: Literal["abort", "retract", "in_place"] = "abort"


class _Continue(msgspec.Struct, forbid_unknown_fields=True):
    pass


class _UpdateFromDisk(msgspec.Struct, forbid_unknown_fields=True):
    model_path: str
    weight_version: str | None = None


SCHEMAS = {"/generate": _Generate, "/abort_request": _Abort, "/pause_generation": _Pause,
           "/continue_generation": _Continue, "/update_weights_from_disk": _UpdateFromDisk}


class FakeSGLang:
    """Answers like an SGLang server: sampled ids from a seeded RNG, stop on a stop id, abort by rid."""

    def __init__(self, vocab: int = 50):
        self.vocab = vocab
        self.calls: list[tuple[str, object]] = []
        self.weight_version = "default"
        self.hold = threading.Event()  # while cleared, rids starting with "hold" wait for an abort
        self.hold.set()
        self.aborted: set[str] = set()
        self.fail_update = False
        self.break_reply = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._reply(200, {}) if self.path == "/health" else self._reply(404, {"error": "no such path"})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                schema = SCHEMAS.get(self.path)
                if schema is None:
                    return self._reply(404, {"error": f"no such path {self.path}"})
                try:
                    body = msgspec.json.decode(raw, type=schema, strict=True)
                except msgspec.ValidationError as exc:
                    return self._reply(400, {"error": str(exc)})
                owner.calls.append((self.path, body))
                status, reply = owner.answer(self.path, body)
                self._reply(status, reply)

            def _reply(self, status, reply):
                data = json.dumps(reply).encode() if not isinstance(reply, bytes) else reply
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str, body):
        if path == "/generate":
            return self._generate(body)
        if path == "/abort_request":
            self.aborted.add(body.rid)
            self.hold.set()
            return 200, {}
        if path == "/update_weights_from_disk":
            if self.fail_update:
                return 200, {"success": False, "message": "shapes differ", "num_paused_requests": 0}
            self.weight_version = body.weight_version or self.weight_version
            return 200, {"success": True, "message": "Succeeded to update model weights.", "num_paused_requests": 0}
        return 200, {}

    def _generate(self, body: _Generate):
        if body.rid.startswith("hold"):
            self.hold.wait(10)
        rng = random.Random(hash(tuple(body.input_ids)) ^ hash(body.rid))
        sampling = body.sampling_params
        out, finish = [], {"type": "length", "length": sampling.max_new_tokens}
        if body.rid in self.aborted:
            finish = {"type": "abort", "message": "Abort in waiting queue"}
        else:
            for _ in range(sampling.max_new_tokens):
                out.append(rng.randrange(self.vocab))
                if out[-1] in sampling.stop_token_ids:
                    finish = {"type": "stop", "matched": out[-1]}
                    break
        logprobs = [[-rng.random() * 3, t, None] for t in out]
        ids = list(out)
        if self.break_reply:
            ids[0] = (ids[0] + 1) % self.vocab
        return 200, {"text": "", "output_ids": ids, "meta_info": {
            "id": body.rid, "finish_reason": finish, "prompt_tokens": len(body.input_ids),
            "completion_tokens": len(out), "cached_tokens": 0, "output_token_logprobs": logprobs,
            "weight_version": self.weight_version, "e2e_latency": 0.01}}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def servers():
    fakes = [FakeSGLang(), FakeSGLang()]
    yield fakes
    for fake in fakes:
        fake.close()


def _req(rid: str, session: str | None = None, max_new: int = 6, stop=(3,)) -> GenerateRequest:
    return GenerateRequest(request_id=rid, input_ids=[5, 9, 2, len(rid)], session_id=session,
                           sampling=SamplingParams(temperature=0.8, top_p=1.0, max_new_tokens=max_new,
                                                   stop_token_ids=tuple(stop)))


async def test_generate_sends_documented_shape_and_reads_tokens_and_logprobs(servers):
    gen = SGLangGenerator(SGLangConfig(urls=[servers[0].url]))
    try:
        results = await asyncio.gather(*(gen.generate(_req(f"r{i}", max_new=4 + i)) for i in range(8)))
    finally:
        await gen.close()
    sent = {body.rid: body for path, body in servers[0].calls if path == "/generate"}
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
                where.setdefault(body.rid.split("-")[0], set()).add(index)
    assert all(len(places) == 1 for places in where.values()), where
    assert {next(iter(p)) for p in where.values()} == {0, 1}  # both servers used


async def test_abort_pause_continue_and_weight_update_reach_every_server(servers):
    gen = SGLangGenerator(SGLangConfig(urls=[s.url for s in servers]))
    try:
        servers[0].hold.clear()
        servers[1].hold.clear()
        held = asyncio.create_task(gen.generate(_req("hold-1", session="s")))
        await asyncio.sleep(0.2)
        assert not held.done()
        await gen.abort("hold-1")
        result = await held
        assert result.finish_reason == "abort" and result.output_ids == []
        aborts = [(i, body.rid) for i, s in enumerate(servers) for path, body in s.calls if path == "/abort_request"]
        assert len(aborts) == 1 and aborts[0][1] == "hold-1"  # only the server running it

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
            assert server.calls[-1] == ("/update_weights_from_disk",
                                        _UpdateFromDisk(model_path="/ckpt/step-1", weight_version="1"))
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
        assert ("hold-slow" in servers[0].aborted), "a timed-out request is aborted on its server"
        dead = SGLangGenerator(SGLangConfig(urls=["http://127.0.0.1:9"]))
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
