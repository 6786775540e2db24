"""A supervised GenerationService process that is killed or hangs is restarted, and the requests waiting on it are
resubmitted to the new process, which serves the weights last pushed (same version)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from turnrl.config.generation import ServiceConfig
from turnrl.engine.generation.service_client import ServiceGenerator, ServiceProcess
from turnrl.models.loading import save_policy
from turnrl.models.tiny import build_tiny_model
from turnrl.protocol import GenerateRequest, SamplingParams


def _request(rid: str) -> GenerateRequest:
    return GenerateRequest(request_id=rid, input_ids=[5, 6, 7, 8], sampling=SamplingParams(max_new_tokens=4))


async def test_killed_and_hung_service_is_restarted_and_requests_resubmitted(tokenizer, tmp_path):
    model = build_tiny_model(tokenizer, "tiny", max_positions=512, seed=0)
    save_policy(model, tokenizer, tmp_path / "policy")
    config = ServiceConfig(model_path=str(tmp_path / "policy"), address=f"ipc://{tmp_path}/gen.sock", torch_threads=1)
    process = await asyncio.to_thread(ServiceProcess(config).start, 180.0)
    generator = ServiceGenerator(
        config.address, owned_process=process, supervise=True, health_interval_s=0.1, hang_timeout_s=2.0
    )
    try:
        tensors = {k: v.clone() for k, v in build_tiny_model(tokenizer, "tiny", 512, seed=1).state_dict().items()}
        assert await generator.update_weights(tensors=tensors, version=7) == 7
        assert (await generator.generate(_request("before"))).versions == [7] * 4

        # SIGKILL while a request waits on the (stopped) process: the request is answered by the new one
        first_pid = process.process.pid
        os.kill(first_pid, signal.SIGSTOP)
        pending = asyncio.create_task(generator.generate(_request("across-kill")))
        await asyncio.sleep(0)
        os.kill(first_pid, signal.SIGKILL)
        result = await asyncio.wait_for(pending, 180)
        assert len(result.output_ids) == 4 and result.versions == [7] * 4  # the pushed weights, sent again
        assert process.process.pid != first_pid
        assert len(generator.restarts) == 1 and "exited with code -9" in generator.restarts[0]

        # SIGSTOP left in place: no health check answered, so it is killed and restarted
        second_pid = process.process.pid
        os.kill(second_pid, signal.SIGSTOP)
        result = await asyncio.wait_for(generator.generate(_request("across-hang")), 180)
        assert result.versions == [7] * 4 and process.process.pid != second_pid
        assert any("health check" in why for why in generator.restarts[1:])
        assert (await generator.service_stats()).weight_version == 7
    finally:
        await generator.close()
    assert process.process is None  # close() stopped the owned process


def test_supervise_needs_the_process():
    with pytest.raises(ValueError, match="owned_process"):
        ServiceGenerator("ipc:///tmp/none.sock", supervise=True)
    with pytest.raises(ValueError, match="hang_timeout_s"):
        ServiceGenerator("ipc:///tmp/none.sock", hang_timeout_s=0)


class FailingOnceProcess(ServiceProcess):
    """A real service process whose first restart fails, as when it is killed again while starting."""

    failed = False

    def restart(self, timeout_s: float = 120.0) -> ServiceProcess:
        if not self.failed:
            self.failed = True
            raise RuntimeError("generation service exited with code -9 while starting")
        return super().restart(timeout_s)


async def test_a_failed_restart_is_tried_again(tokenizer, tmp_path):
    save_policy(build_tiny_model(tokenizer, "tiny", max_positions=512, seed=0), tokenizer, tmp_path / "policy")
    config = ServiceConfig(model_path=str(tmp_path / "policy"), address=f"ipc://{tmp_path}/gen.sock", torch_threads=1)
    process = await asyncio.to_thread(FailingOnceProcess(config).start, 180.0)
    generator = ServiceGenerator(config.address, owned_process=process, supervise=True, health_interval_s=0.1)
    try:
        first_pid = process.process.pid
        os.kill(first_pid, signal.SIGKILL)
        result = await asyncio.wait_for(generator.generate(_request("after-failed-restart")), 180)
        assert len(result.output_ids) == 4 and process.process.pid != first_pid
        assert "restart 1 failed" in generator.restarts[0] and "exited with code -9" in generator.restarts[1]
    finally:
        await generator.close()
