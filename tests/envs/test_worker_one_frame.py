"""An EnvWorker answers a message of several frames once, as malformed, and runs none of it."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from turnrl.config.envs import EnvWorkerConfig
from turnrl.envs.zmq.pool import EnvWorkerPool


async def test_a_multipart_message_gets_one_error_and_runs_nothing():
    async with EnvWorkerPool(EnvWorkerConfig(workers=1, heartbeat_s=0.1)) as pool:
        worker = pool.workers[0]
        create = msgspec.msgpack.encode({"call_id": 10**6, "op": "create", "env_id": 5, "family": "babyai"})
        await pool._sock.send_multipart([worker.identity, create, b"a second part"])
        # a valid call after it: answered after the error reply (one socket, in order)
        with pytest.raises(RuntimeError, match="no env with env_id 5"):  # the create inside was not run
            await asyncio.wait_for(pool.call(worker, worker.generation, op="reset", env_id=5, item_id=0), 30)
        assert pool.errors == ["bad frame: 2 parts, expected 1"]
        assert pool.restarts == 0 and worker.process.poll() is None
