"""A frame nested too deeply to read gets a ``malformed`` error reply, and the service keeps answering."""

from __future__ import annotations

import asyncio
import sys

import msgspec
import pytest
import zmq
import zmq.asyncio

from turnrl.config.generation import ServiceConfig
from turnrl.engine.generation.service import GenerationService
from turnrl.models.tiny import build_tiny_model
from turnrl.protocol import ErrorReply, ServiceReplyKind, ServiceStats, StatsCall, encode


def _nested(depth: int) -> bytes:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * depth))
    try:
        value: object = 0
        for _ in range(depth):
            value = [value]
        return msgspec.msgpack.encode(value)
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize("field", ["op", "request_id", "extra"])
async def test_deeply_nested_frame_is_malformed_and_the_service_keeps_serving(tokenizer, tmp_path, field):
    model = build_tiny_model(tokenizer, "tiny", max_positions=256, seed=0).eval()
    config = ServiceConfig(model_path=str(tmp_path), address=f"ipc://{tmp_path}/gen.sock")
    service = GenerationService(config, model, tokenizer.pad_token_id)
    serving = asyncio.create_task(service.serve())
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(config.address)
    decoder = msgspec.msgpack.Decoder(ServiceReplyKind)
    try:
        fields = {"op": b"\xa5stats", "request_id": b"\xa1x"}
        fields[field] = _nested(5000)
        frame = b"\x83" + b"".join(msgspec.msgpack.encode(k) + v for k, v in fields.items())
        if field != "extra":
            frame = b"\x82" + frame[1:]
        await sock.send(frame)
        reply = decoder.decode(await asyncio.wait_for(sock.recv(), 30))
        assert isinstance(reply, ErrorReply) and reply.code == "malformed"
        await sock.send(encode(StatsCall(request_id="after")))
        reply = decoder.decode(await asyncio.wait_for(sock.recv(), 30))
        assert isinstance(reply, ServiceStats) and reply.request_id == "after" and reply.errors_replied == 1
    finally:
        sock.close()
        service._stop.set()
        await asyncio.wait_for(serving, 30)
