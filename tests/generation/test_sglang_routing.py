"""Routing over SGLang servers: a GRPO group's members on one server, directly or through sglang-router.

Directly, the client keeps every session (episode) on one server and every group (episodes sharing a prompt) on
the server its first member went to; through a router (its ``manual`` policy), every request carries the group
key in ``X-SMG-Routing-Key`` and control calls go to the servers themselves, which the router does not forward.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.generation.fake_sglang import FakeSGLang
from turnrl.config.generation import SGLangConfig, SGLangOptions
from turnrl.engine.generation.sglang import SGLangGenerator
from turnrl.engine.generation.sglang_routing import ROUTING_HEADER, ServerRouter
from turnrl.protocol import GenerateRequest, SamplingParams


@pytest.fixture()
def fakes():
    servers = [FakeSGLang(), FakeSGLang(), FakeSGLang()]
    yield servers
    for server in servers:
        server.close()


def _req(group: int, member: int, turn: int) -> GenerateRequest:
    return GenerateRequest(
        request_id=f"g{group}m{member}t{turn}",
        input_ids=[3, group + 4, member + 4, turn + 4],
        session_id=f"g{group}m{member}",
        group_key=f"g{group}",
        sampling=SamplingParams(max_new_tokens=3),
    )


def _where(servers, path="/generate"):
    seen: dict[str, set[int]] = {}
    for index, server in enumerate(servers):
        for p, body in server.calls:
            if p == path:
                seen.setdefault(body.rid.split("-")[1], set()).add(index)
    return seen


async def test_a_groups_members_land_on_one_server_and_groups_spread(fakes):
    gen = SGLangGenerator(SGLangConfig(urls=[f.url for f in fakes], options=SGLangOptions(retry_backoff_s=0.01)))
    try:
        for turn in range(2):
            await asyncio.gather(*(gen.generate(_req(g, m, turn)) for g in range(6) for m in range(4)))
        for g in range(6):
            for m in range(4):
                await gen.end_session(f"g{g}m{m}")
        assert not gen.router.groups and not gen.router.sessions  # forgotten when their last session ends
        assert all(v == 0 for v in gen.router.in_flight.values())
    finally:
        await gen.close()
    where = _where(fakes)
    by_group: dict[str, set[int]] = {}
    for rid, servers in where.items():
        by_group.setdefault(rid.split("m")[0], set()).update(servers)
    assert len(by_group) == 6 and all(len(s) == 1 for s in by_group.values()), by_group
    assert {next(iter(s)) for s in by_group.values()} == {0, 1, 2}  # the groups are spread


def test_router_bookkeeping_against_a_reference_model():
    """Random acquire/release/end sequences: group pinning and in-flight counts match a plain model."""
    rng = random.Random(7)
    router = ServerRouter(["a", "b"])
    group_of: dict[str, str] = {}
    alive: dict[str, set[str]] = {}
    for step in range(400):
        session = f"s{rng.randrange(30)}"
        group = f"g{int(session[1:]) % 7}"
        if rng.random() < 0.3 and session in router.sessions:
            router.end_session(session)
            alive[group].discard(session)
            if not alive[group]:
                group_of.pop(group, None)
            continue
        url = router.server_for(session, group)
        if group in group_of:
            assert url == group_of[group], step
        group_of[group] = url
        alive.setdefault(group, set()).add(session)
        router.acquire(url)
        router.release(url)
    assert router.in_flight == {"a": 0, "b": 0}
    assert {g for g, (_, n) in router.groups.items() if n} == {g for g, s in alive.items() if s}


async def test_behind_a_router_requests_carry_the_group_key_and_control_reaches_the_servers(fakes):
    router, workers = fakes[0], fakes[1:]
    options = SGLangOptions(routing="router", worker_urls=tuple(w.url for w in workers), retry_backoff_s=0.01)
    gen = SGLangGenerator(SGLangConfig(urls=[router.url], options=options))
    try:
        await asyncio.gather(*(gen.generate(_req(g, m, 0)) for g in range(2) for m in range(2)))
        await gen.update_weights("/ckpt/1")
    finally:
        await gen.close()
    generates = [(body, headers) for (p, body), headers in zip(router.calls, router.headers, strict=True)]
    keys = {body.rid.split("-")[1]: headers.get(ROUTING_HEADER) for (body, headers) in generates}
    assert keys == {f"g{g}m{m}t0": f"g{g}" for g in range(2) for m in range(2)}
    assert [p for p, _ in router.calls] == ["/generate"] * 4  # no control call through the router
    for worker in workers:
        assert [p for p, _ in worker.calls] == [
            "/pause_generation",
            "/update_weights_from_disk",
            "/continue_generation",
        ]
    with pytest.raises(ValueError, match="worker_urls"):
        SGLangOptions(routing="router")
    with pytest.raises(ValueError, match="router's one URL"):
        SGLangConfig(urls=[router.url, router.url], options=options)
