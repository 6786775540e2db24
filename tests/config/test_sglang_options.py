"""SGLang options: every bad value is refused with its key; a run config reaches them through TOML keys."""

from __future__ import annotations

import pytest

from turnrl.config.generation import GeneratorConfig, SGLangConfig, SGLangOptions
from turnrl.config.toml_file import load


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"weight_sync": "tensor"}, "weight_sync must be one of disk, nccl"),
        ({"routing": "cache_aware"}, "routing must be one of direct, router"),
        ({"routing": "router"}, "worker_urls must name"),
        ({"routing": "router", "worker_urls": ("localhost:1",)}, "not an http"),
        ({"ready_timeout_s": 0}, "ready_timeout_s must be > 0"),
        ({"keepalive_expiry_s": 6}, "below the server's 5 s"),
        ({"retries": -1}, "retries"),
        ({"max_connections_per_server": 0}, "max_connections_per_server must be >= 1"),
        ({"bucket_mb": 0}, "bucket_mb must be >= 1"),
        ({"server_ranks": 0}, "server_ranks must be >= 1"),
        ({"nccl_master_port": 70000}, "nccl_master_port"),
        ({"nccl_backend": "mpi"}, "nccl_backend"),
    ],
)
def test_bad_options_name_their_key(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SGLangOptions(**kwargs)


def test_config_servers_and_in_flight():
    options = SGLangOptions(routing="router", worker_urls=("http://a:1/", "http://b:2"))
    assert SGLangConfig(urls=["http://r:9"], options=options).servers == ["http://a:1", "http://b:2"]
    assert SGLangConfig(urls=["http://a:1/", "http://b:2"]).servers == ["http://a:1", "http://b:2"]
    with pytest.raises(ValueError, match="in_flight"):
        SGLangConfig(urls=["http://a:1"], in_flight="drop")


def test_a_run_config_sets_them_by_key():
    config = load(
        None,
        [
            "rollout.generator.kind=sglang",
            "rollout.generator.urls=['http://127.0.0.1:30000']",
            "rollout.generator.sglang.weight_sync=nccl",
            "rollout.generator.sglang.bucket_mb=64",
        ],
    )
    assert isinstance(config.rollout.generator, GeneratorConfig)
    assert config.rollout.generator.sglang.weight_sync == "nccl" and config.rollout.generator.sglang.bucket_mb == 64
    with pytest.raises(ValueError, match="weight_sync"):
        load(None, ["rollout.generator.sglang.weight_sync=tcp"])
