"""GenerationService in its own process over real ZeroMQ sockets: batching, log-probs, bad frames, control."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import torch
import zmq
import zmq.asyncio

from turnrl.config.generation import ServiceConfig
from turnrl.engine.generation.service import hard_frame_limit
from turnrl.engine.generation.service_client import ServiceGenerator, ServiceProcess
from turnrl.engine.training.batch import pack, policy_logprobs
from turnrl.errors import BadRequest, GenerationTimeout, ServiceError
from turnrl.models.loading import save_policy
from turnrl.models.tiny import build_tiny_model
from turnrl.protocol import (
    ErrorReply,
    GenerateCall,
    GenerateReply,
    GenerateRequest,
    GenerateResult,
    SamplingParams,
    ServiceReplyKind,
    Task,
    Trajectory,
    Turn,
    decode,
    encode,
)

MAX_FRAME = 8 * 1024 * 1024  # a tiny model's weights fit in one frame


@pytest.fixture(scope="module")
def served(make_tiny_model, tokenizer, tmp_path_factory):
    """One service process for the module; tests leave it unpaused and serving the seed-0 weights."""
    root = tmp_path_factory.mktemp("service")
    model, other = make_tiny_model(0), make_tiny_model(1)
    save_policy(model, tokenizer, root / "policy")
    save_policy(other, tokenizer, root / "other")
    config = ServiceConfig(
        model_path=str(root / "policy"),
        address=f"ipc://{root}/gen.sock",
        max_running=16,
        max_frame_bytes=MAX_FRAME,
        torch_threads=1,
    )
    with ServiceProcess(config).start(timeout_s=180) as process:
        yield {"config": config, "model": model, "other": other, "other_path": str(root / "other"), "process": process}


def _request(
    rid: str, n: int, max_new: int, seed: int, vocab: int, temperature: float = 1.0, stop=(), allowed=None
) -> GenerateRequest:
    ids = torch.randint(5, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()
    return GenerateRequest(
        request_id=rid,
        input_ids=ids,
        allowed=allowed,
        sampling=SamplingParams(temperature=temperature, max_new_tokens=max_new, stop_token_ids=tuple(stop)),
    )


def _recomputed(model, request: GenerateRequest, output_ids: list[int]) -> torch.Tensor:
    """Log-probs of ``output_ids`` after the prompt, from one fresh forward of ``model``."""
    n = len(request.input_ids)
    turns = (
        [
            Turn(
                action_start=n,
                action_end=n + len(output_ids),
                action_text="",
                observation="",
                reward=0.0,
                allowed=request.allowed,
            )
        ]
        if request.allowed
        else []
    )
    traj = Trajectory(
        task=Task(env="t", item_id=0),
        token_ids=list(request.input_ids) + output_ids,
        loss_mask=[0] * n + [1] * len(output_ids),
        logprobs=[0.0] * (n + len(output_ids)),
        versions=[0] * (n + len(output_ids)),
        prompt_len=n,
        turns=turns,
    )
    batch = pack([traj], None, 0)
    with torch.no_grad():
        logp, _, _ = policy_logprobs(model, batch, temperature=request.sampling.temperature or 1.0)
    return logp[0, n : n + len(output_ids)]


async def _wait_for_tokens(client: ServiceGenerator, at_least: int, timeout_s: float = 30.0) -> None:
    start = (await client.service_stats()).tokens_generated
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (await client.service_stats()).tokens_generated < start + at_least:
        assert asyncio.get_running_loop().time() < deadline, "the service generated nothing"
        await asyncio.sleep(0.01)


async def _until_waiting(client: ServiceGenerator, count: int) -> None:
    while (await client.service_stats()).waiting < count:
        await asyncio.sleep(0.01)


async def test_round_trip(served, tokenizer):
    client = ServiceGenerator(served["config"].address)
    try:
        before = await client.service_stats()
        req = _request("rt", 7, 6, seed=3, vocab=len(tokenizer))
        res = await client.generate(req)
        assert res.request_id == "rt" and 1 <= len(res.output_ids) <= 6
        assert len(res.logprobs) == len(res.output_ids) and all(lp <= 0 for lp in res.logprobs)
        assert res.versions == [before.weight_version] * len(res.output_ids)
        assert res.finish_reason == "length"
        assert (await client.service_stats()).requests_finished == before.requests_finished + 1
    finally:
        await client.close()


async def test_request_submitted_mid_decode_finishes_first(served, tokenizer):
    client = ServiceGenerator(served["config"].address)
    vocab = len(tokenizer)
    try:
        before = await client.service_stats()
        long = asyncio.create_task(client.generate(_request("long", 9, 200, seed=1, vocab=vocab)))
        await _wait_for_tokens(client, 3)
        shorts = [
            asyncio.create_task(client.generate(_request(f"s{i}", 5 + 3 * i, 4 + i, seed=10 + i, vocab=vocab)))
            for i in range(6)
        ]
        done, _ = await asyncio.wait([long, *shorts], return_when=asyncio.FIRST_COMPLETED)
        assert long not in done
        short_results = await asyncio.gather(*shorts)
        assert not long.done(), "the short requests should not wait for the long one"
        assert [r.request_id for r in short_results] == [f"s{i}" for i in range(6)]
        assert [len(r.output_ids) for r in short_results] == [4 + i for i in range(6)]
        long_result = await long
        assert len(long_result.output_ids) == 200
        after = await client.service_stats()
        # they ran together: more tokens than forward passes
        assert after.tokens_generated - before.tokens_generated > after.steps - before.steps
    finally:
        await client.close()


async def test_sampled_logprobs_match_a_recomputation(served, tokenizer):
    client = ServiceGenerator(served["config"].address)
    vocab = len(tokenizer)
    allowed = [[11, 12, 13], [11, 14], [20]]
    requests = [
        _request(f"lp{i}", n, 12, seed=100 + i, vocab=vocab, temperature=t)
        for i, (n, t) in enumerate([(3, 1.0), (17, 0.7), (30, 1.0), (8, 0.0), (45, 1.3)])
    ]
    requests.append(_request("lp-c", 10, 5, seed=7, vocab=vocab, allowed=allowed))
    try:
        first = [asyncio.create_task(client.generate(r)) for r in requests[:3]]
        await _wait_for_tokens(client, 4)  # the rest join a running batch
        results = await asyncio.gather(*first, *(client.generate(r) for r in requests[3:]))
    finally:
        await client.close()
    for req, res in zip(requests, results, strict=True):
        expected = _recomputed(served["model"], req, res.output_ids)
        assert torch.allclose(torch.tensor(res.logprobs), expected, atol=1e-4), req.request_id
    assert results[-1].output_ids in allowed and results[-1].finish_reason == "stop"


async def test_malformed_and_oversized_frames_get_error_replies(served, tokenizer):
    address = served["config"].address
    decoder = msgspec.msgpack.Decoder(ServiceReplyKind)
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)

    async def ask(*frames):
        await sock.send_multipart(list(frames))
        assert await sock.poll(10_000), "no reply"
        return decoder.decode((await sock.recv_multipart())[-1])

    good = _request("ok", 4, 3, seed=5, vocab=len(tokenizer))
    try:
        cases = [
            ((b"\xc1 not msgpack",), "malformed"),
            ((msgspec.msgpack.encode([1, 2, 3]),), "malformed"),
            ((encode(GenerateCall(request_id="x", request=good)), b"extra"), "malformed"),
            ((b"\x00" * (MAX_FRAME + 1),), "too_large"),
        ]
        for frames, code in cases:
            reply = await ask(*frames)
            assert isinstance(reply, ErrorReply) and reply.code == code and reply.request_id is None, frames[0][:20]
        nested = {"request_id": "r", "input_ids": [1], "extra": 2}
        for rid, frame, needle in [
            ("x1", {"op": "generate", "request_id": "x1"}, "missing required field `request`"),
            ("x2", {"op": "launch", "request_id": "x2"}, "Invalid value 'launch'"),  # unknown op
            ("x3", {"op": "stats", "request_id": "x3", "typo": 1}, "unknown field `typo`"),
            ("x4", {"op": "generate", "request_id": "x4", "request": nested}, "unknown field `extra`"),
            ("x5", {"op": "generate", "request_id": "x5", "request": {"input_ids": [1]}}, "`request_id`"),
            (None, {"op": "stats"}, "missing required field `request_id`"),
        ]:
            reply = await ask(msgspec.msgpack.encode(frame))
            assert isinstance(reply, ErrorReply) and reply.code == "malformed" and reply.request_id == rid
            assert needle in reply.message, reply.message
        big = GenerateRequest(request_id="big", input_ids=[300] * (MAX_FRAME // 3))  # 3 bytes per id
        reply = await ask(encode(GenerateCall(request_id="big", request=big)))
        assert isinstance(reply, ErrorReply) and reply.code == "too_large"
        bad_requests = [
            (GenerateRequest(request_id="b1", input_ids=[]), "input_ids"),
            (GenerateRequest(request_id="b2", input_ids=[1, len(tokenizer) + 5]), "input_ids"),
            (
                GenerateRequest(request_id="b3", input_ids=[3], sampling=SamplingParams(max_new_tokens=0)),
                "max_new_tokens",
            ),
            (GenerateRequest(request_id="b4", input_ids=[3], sampling=SamplingParams(top_p=0.0)), "top_p"),
            (
                GenerateRequest(request_id="b5", input_ids=[3] * 2000, sampling=SamplingParams(max_new_tokens=100)),
                "positions",
            ),
            (GenerateRequest(request_id="b6", input_ids=[3], allowed=[[]]), "allowed"),
        ]
        for request, field in bad_requests:
            reply = await ask(encode(GenerateCall(request_id=request.request_id, request=request)))
            assert isinstance(reply, ErrorReply) and reply.code == "bad_request", request.request_id
            assert reply.request_id == request.request_id and field in reply.message
        reply = await ask(encode(GenerateCall(request_id="ok", request=good)))  # still serving, same socket
        assert isinstance(reply, GenerateReply) and reply.request_id == "ok" and len(reply.result.output_ids) == 3
    finally:
        sock.close(linger=0)
    huge = zmq.asyncio.Context.instance().socket(zmq.DEALER)  # past the transport's hard limit: dropped
    huge.setsockopt(zmq.LINGER, 0)
    huge.connect(address)
    await huge.send(b"\x00" * (hard_frame_limit(MAX_FRAME) + 1))
    huge.close(linger=2000)
    client = ServiceGenerator(address, max_frame_bytes=MAX_FRAME)
    try:
        assert served["process"].process.is_alive()
        with pytest.raises(ValueError, match="max_frame_bytes"):  # refused before sending
            await client.generate(big)
        with pytest.raises(BadRequest, match="bad_request"):
            await client.generate(GenerateRequest(request_id="neg", input_ids=[-1]))
        assert len((await client.generate(good)).output_ids) == 3
    finally:
        await client.close()


async def test_timeout_truncates_only_that_request(served, tokenizer):
    client = ServiceGenerator(served["config"].address)
    vocab = len(tokenizer)
    try:
        slow = asyncio.create_task(client.generate(_request("slow", 6, 1500, seed=2, vocab=vocab), timeout_s=1.0))
        others = await asyncio.gather(
            *(client.generate(_request(f"o{i}", 5, 10, seed=i, vocab=vocab)) for i in range(3))
        )
        assert all(r.finish_reason == "length" and len(r.output_ids) == 10 for r in others)
        # paused, the service decodes nothing more, but the slow request's deadline still ends it: however fast
        # or slow this machine, it times out partway
        await client.pause()
        with pytest.raises(GenerationTimeout) as caught:
            await slow
        partial = caught.value.result
        assert partial.finish_reason == "timeout" and 0 < len(partial.output_ids) < 1500
        assert len(partial.logprobs) == len(partial.versions) == len(partial.output_ids)
        # a client-side timeout aborts the request in the service too (still paused: it cannot finish first)
        impatient = ServiceGenerator(served["config"].address, request_timeout_s=0.3)
        try:
            with pytest.raises(TimeoutError):
                await impatient.generate(_request("gone", 6, 1500, seed=4, vocab=vocab))
        finally:
            await impatient.close()
        await asyncio.wait_for(_until_idle(client), 30)  # a hang guard
        await client.resume()
        assert len((await client.generate(_request("after", 5, 4, seed=6, vocab=vocab))).output_ids) == 4
    finally:
        await client.resume()
        await client.close()


async def _until_idle(client: ServiceGenerator) -> None:
    while True:
        stats = await client.service_stats()
        if stats.running == 0 and stats.waiting == 0:
            return
        await asyncio.sleep(0.02)


async def test_abort_ends_only_the_aborted_request(served, tokenizer):
    client = ServiceGenerator(served["config"].address)
    vocab = len(tokenizer)
    try:
        doomed = asyncio.create_task(client.generate(_request("doomed", 6, 1500, seed=8, vocab=vocab)))
        kept = asyncio.create_task(client.generate(_request("kept", 6, 60, seed=9, vocab=vocab)))
        await _wait_for_tokens(client, 4)
        assert await client.abort("doomed") == 1
        result = await doomed
        assert result.finish_reason == "abort" and 0 < len(result.output_ids) < 1500
        assert len((await kept).output_ids) == 60
        assert await client.abort("no-such-request") == 0
    finally:
        await client.close()


async def test_pause_holds_requests_until_resume(served, tokenizer):
    client = ServiceGenerator(served["config"].address)
    try:
        await client.pause()
        task = asyncio.create_task(client.generate(_request("held", 5, 5, seed=1, vocab=len(tokenizer))))
        await asyncio.wait_for(_until_waiting(client, 1), 30)  # a hang guard: the request reached the service
        stats = await client.service_stats()
        assert not task.done() and stats.paused and stats.waiting == 1
        await asyncio.sleep(0.2)
        assert (await client.service_stats()).tokens_generated == stats.tokens_generated
        await client.resume()
        assert len((await task).output_ids) == 5
    finally:
        await client.resume()
        await client.close()


async def test_weight_update_bumps_versions_of_later_tokens(served, tokenizer):
    client = ServiceGenerator(served["config"].address, max_frame_bytes=MAX_FRAME)
    vocab = len(tokenizer)
    model, other = served["model"], served["other"]
    try:
        v0 = (await client.service_stats()).weight_version
        req = _request("across", 8, 1500, seed=21, vocab=vocab)
        task = asyncio.create_task(client.generate(req))
        await _wait_for_tokens(client, 3)
        await client.pause()
        assert await client.update_weights(path=served["other_path"]) == v0 + 1
        assert client.weight_version == v0 + 1
        await client.resume()
        await _wait_for_tokens(client, 3)
        await client.abort("across")
        result = await task
        versions = torch.tensor(result.versions)
        cut = int((versions == v0).sum())
        assert cut >= 3 and len(result.versions) - cut >= 3 and bool((versions[cut:] == v0 + 1).all())
        # partial rollout: each token's log-prob is that of the weights it was sampled under, on its whole context
        logprobs = torch.tensor(result.logprobs)
        assert torch.allclose(logprobs[:cut], _recomputed(model, req, result.output_ids)[:cut], atol=1e-4)
        assert torch.allclose(logprobs[cut:], _recomputed(other, req, result.output_ids)[cut:], atol=1e-4)

        with pytest.raises(BadRequest, match="no parameter"):
            await client.update_weights(tensors={"not.a.weight": torch.zeros(2)})
        # back to the first weights, sent as tensors, with running requests aborted and resumed from their partial
        # output: nothing lost, nothing generated twice
        before = (await client.service_stats()).tokens_generated
        resumed = asyncio.create_task(client.generate(_request("again", 8, 200, seed=22, vocab=vocab)))
        await _wait_for_tokens(client, 3)
        await client.pause()  # so that the update surely lands while "again" runs
        assert await client.update_weights(tensors=model.state_dict(), in_flight="abort") == v0 + 2
        await client.resume()
        again = await resumed
        assert len(again.output_ids) == 200 and again.finish_reason == "length"
        assert (await client.service_stats()).tokens_generated - before == 200
        versions = torch.tensor(again.versions)
        cut = int((versions == v0 + 1).sum())
        assert cut >= 3 and bool((versions[cut:] == v0 + 2).all()) and cut < 200
        request = _request("again", 8, 200, seed=22, vocab=vocab)
        logprobs = torch.tensor(again.logprobs)
        assert torch.allclose(logprobs[:cut], _recomputed(other, request, again.output_ids)[:cut], atol=1e-4)
        assert torch.allclose(logprobs[cut:], _recomputed(model, request, again.output_ids)[cut:], atol=1e-4)
    finally:
        await client.resume()
        await client.close()


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="max_running"):
        ServiceConfig(model_path=str(tmp_path), max_running=0)
    with pytest.raises(ValueError, match="address"):
        ServiceConfig(model_path=str(tmp_path), address="http://x")
    with pytest.raises(ValueError, match="max_frame_bytes"):
        ServiceConfig(model_path=str(tmp_path), max_frame_bytes=10)


async def test_a_failing_forward_ends_only_its_batch(tokenizer, tmp_path):
    """The service run in this process around a model that fails on one token: that request gets an
    ``internal`` error, the service serves the next ones."""
    from turnrl.engine.generation.service import GenerationService

    poison = 42

    class Flaky(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=None, **cache):
            if input_ids.shape[1] > 1 and bool((input_ids == poison).any()):  # a prompt holding it
                raise RuntimeError("device on fire")
            return self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=use_cache,
                **cache,
            )

    model = Flaky(build_tiny_model(tokenizer, "tiny", max_positions=256, seed=0).eval())
    config = ServiceConfig(model_path=str(tmp_path), address=f"ipc://{tmp_path}/flaky.sock")
    serving = asyncio.create_task(GenerationService(config, model, tokenizer.pad_token_id).serve())
    client = ServiceGenerator(config.address)
    try:
        with pytest.raises(ServiceError, match="device on fire"):
            await client.generate(GenerateRequest(request_id="bad", input_ids=[5, poison, 7]))
        results = await asyncio.gather(
            *(client.generate(_request(f"g{i}", 4, 3, seed=i, vocab=poison)) for i in range(3))
        )
        assert [len(r.output_ids) for r in results] == [3, 3, 3]
        assert (await client.service_stats()).errors_replied >= 1
        await client.shutdown()
        await asyncio.wait_for(serving, 10)
    finally:
        await client.close()
        serving.cancel()


async def test_a_reply_that_does_not_decode_fails_only_the_call_it_names(tmp_path):
    """A fake service on a real socket answers one call with an unknown field and the other with garbage first."""
    ctx = zmq.asyncio.Context()
    fake = ctx.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    address = f"ipc://{tmp_path}/fake-service.sock"
    fake.bind(address)
    good = GenerateResult(request_id="b", output_ids=[4], logprobs=[-0.5], versions=[0], finish_reason="length")

    async def serve_two_calls():
        for _ in range(2):
            identity, frame = await fake.recv_multipart()
            call = decode(frame, GenerateCall)
            if call.request_id == "a":
                reply = msgspec.to_builtins(GenerateReply(request_id="a", result=good)) | {"surprise": 1}
                await fake.send_multipart([identity, msgspec.msgpack.encode(reply)])
            else:
                await fake.send_multipart([identity, b"\xc1 garbage"])
                await fake.send_multipart([identity, encode(GenerateReply(request_id="b", result=good))])

    client = ServiceGenerator(address, request_timeout_s=60)  # a hang guard
    server = asyncio.create_task(serve_two_calls())
    try:
        first, second = await asyncio.gather(
            client.generate(GenerateRequest(request_id="a", input_ids=[1])),
            client.generate(GenerateRequest(request_id="b", input_ids=[1])),
            return_exceptions=True,
        )
        await server
        assert isinstance(first, ServiceError) and first.code == "malformed" and first.request_id == "a"
        assert "unknown field `surprise`" in str(first)
        assert second == good and client.bad_replies == 2
    finally:
        await client.close()
        fake.close(0)
        ctx.term()
