"""Every request body SGLangGenerator sends, checked by SGLang's own request classes (the pinned wheel's).

The client runs every call it makes (generate, abort one and all, pause in each mode, continue, flush, disk
update, the broadcast path's group, bracket and buckets, memory release and resume) against fake servers that
keep every raw body; each body is then validated as SGLang's HTTP server reads it (``sglang_classes.validate``:
pydantic over the class from ``io_struct.py``, every key a field the class defines, ``SamplingParams`` built and
verified). Without sglang installed, the field lists recorded from the same pinned source are checked instead.
"""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.generation import sglang_classes as sc
from tests.generation.fake_sglang import FakeSGLang
from tests.generation.fake_sglang_process import FakeSGLangProcess
from turnrl.config.generation import SGLANG_MIN_VERSION, SGLangConfig, SGLangOptions
from turnrl.engine.generation.sglang import SGLangGenerator
from turnrl.protocol import GenerateRequest, SamplingParams

ROOT = Path(__file__).resolve().parents[2]


def _req(rid: str, **sampling) -> GenerateRequest:
    return GenerateRequest(
        request_id=rid, input_ids=[4, 5, 6], session_id=rid, group_key="g", sampling=SamplingParams(**sampling)
    )


async def _every_call_over_http(tmp_path) -> list[tuple[str, dict]]:
    server = FakeSGLang()
    gen = SGLangGenerator(SGLangConfig(urls=[server.url], options=SGLangOptions(retry_backoff_s=0.01)))
    try:
        await gen.generate(_req("a", temperature=0.7, top_p=0.9, max_new_tokens=4, stop_token_ids=(3, 9)))
        await gen.generate(_req("b", temperature=0.0, max_new_tokens=1))
        server.hold.clear()
        held = asyncio.create_task(gen.generate(_req("hold-c")))
        for _ in range(3000):
            if server.running:
                break
            await asyncio.sleep(0.01)
        await gen.abort("hold-c")
        await held
        server.release_hold()
        for mode in ("abort", "retract", "in_place"):
            await gen.pause(mode)
            await gen.resume()
        await gen.abort_all()
        await gen.flush_cache()
        await gen.update_weights("/ckpt/1")
        await gen.release_memory()
        await gen.release_memory(["kv_cache"])
        await gen.resume_memory(["weights"])
        await gen.resume_memory()
    finally:
        await gen.close()
        server.close()
    return list(server.raw)


async def _broadcast_calls(model, tokenizer, tmp_path) -> list[tuple[str, dict]]:
    options = SGLangOptions(weight_sync="nccl", nccl_backend="gloo", bucket_mb=1, retry_backoff_s=0.01)
    with FakeSGLangProcess(model.state_dict()) as server:
        gen = SGLangGenerator(SGLangConfig(urls=[server.url], options=options))
        try:
            await gen.push_weights(model, tokenizer, tmp_path)
        finally:
            await gen.close()
        return [tuple(item) for item in httpx.get(server.url + "/fake/raw", timeout=30).json()]


async def test_every_request_body_is_one_sglangs_own_classes_accept(tokenizer, tmp_path):
    from turnrl.models.tiny import build_tiny_model

    model = build_tiny_model(tokenizer, "tiny", max_positions=128, seed=0)
    calls = await _every_call_over_http(tmp_path) + await _broadcast_calls(model, tokenizer, tmp_path)
    assert {path for path, _ in calls} == set(sc.ENDPOINTS)  # every endpoint the client uses was exercised
    with sc.sglang_classes() as classes:
        for path, body in calls:
            sc.validate(classes, path, body)
        for path, body in calls:  # and the recorded field lists agree
            sc.validate(None, path, body)


@pytest.mark.parametrize("installed", [True, False])
def test_validation_refuses_what_sglang_would_refuse_or_drop(installed):
    with sc.sglang_classes() as classes:
        if installed and classes is None:
            pytest.skip("sglang is not installed (pip install --no-deps sglang==0.5.23)")
        use = classes if installed else None
        good = {"input_ids": [1, 2], "rid": "x", "return_logprob": True, "sampling_params": {"max_new_tokens": 2}}
        sc.validate(use, "/generate", good)
        with pytest.raises(AssertionError, match="bogus"):
            sc.validate(use, "/generate", {**good, "bogus": 1})
        with pytest.raises((TypeError, AssertionError), match="max_tokens"):
            sc.validate(use, "/generate", {**good, "sampling_params": {"max_tokens": 2}})
        with pytest.raises((AssertionError, ValueError), match="master_port"):
            sc.validate(use, "/init_weights_update_group", {"master_address": "h", "rank_offset": 1, "world_size": 2})
        with pytest.raises(AssertionError, match="not an endpoint"):
            sc.validate(use, "/update_weights", {})
        if installed:
            with pytest.raises(Exception, match="rid"):
                sc.validate(use, "/abort_request", {"rid": 3})
            with pytest.raises(ValueError, match="temperature"):
                sc.validate(use, "/generate", {**good, "sampling_params": {"temperature": -1.0}})


def test_the_fake_server_accepts_only_fields_sglang_defines():
    """The fake's own request shapes are a subset of SGLang's classes (it cannot accept what SGLang would drop)."""
    import msgspec

    from tests.generation.fake_sglang import SCHEMAS

    recorded = sc.recorded_fields()["classes"]
    for path, schema in SCHEMAS.items():
        name = sc.ENDPOINTS[path]
        if name is None:
            continue
        fields = {f.name for f in msgspec.structs.fields(schema)}
        assert fields <= set(recorded[name]["fields"]), (path, fields - set(recorded[name]["fields"]))
        assert set(recorded[name]["required"]) <= fields, path
    (params,) = [f.type for f in msgspec.structs.fields(SCHEMAS["/generate"]) if f.name == "sampling_params"]
    sampling = {f.name for f in msgspec.structs.fields(params)}
    assert sampling <= set(recorded["SamplingParams"]["fields"])


def test_the_pin_and_the_recorded_fields_match_the_installed_wheel():
    recorded = sc.recorded_fields()
    assert recorded["sglang_version"] == sc.PINNED == SGLANG_MIN_VERSION
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["sglang"]
    assert extras == [f"sglang[all]>={SGLANG_MIN_VERSION}"]
    with sc.sglang_classes() as classes:
        if classes is None:
            pytest.skip("sglang is not installed (pip install --no-deps sglang==0.5.23)")
        assert sc.installed_version() == sc.PINNED
        for name, fields in recorded["classes"].items():
            if name != "SamplingParams":
                assert sc.class_fields(classes, name) == fields["fields"], name
