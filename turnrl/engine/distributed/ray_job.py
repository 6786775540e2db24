"""A whole job placed by Ray (the optional extra ``turnrl[ray]``): learner ranks, a generation service and env
workers as actors in one placement group, described by the run's own config (``placement``).

Run as ``python -m turnrl.engine.distributed.ray_job --config job.toml [--address RAY_ADDRESS]``.

Invariants:
- every role is the same code its plain command runs (``turnrl env-worker --bind``, the generation service,
  ``turnrl.engine.distributed.train`` under torchrun); Ray only places the processes and hands each role its
  peers' addresses: torch.distributed runs inside the learner actors (rank, world size, master address and
  port set as torchrun would), the env workers and the service listen on their node's address;
- one bundle per role instance (``placement.*``), all in one placement group with ``placement.strategy``;
- the job tears down what it placed (every actor killed, the placement group removed), also after a failure;
- nothing here imports Ray at module level: without the extra, everything else in turnrl still works.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import socket
import sys
import threading

import msgspec

from turnrl.config import TrainConfig, to_dict
from turnrl.config.envs import EnvWorkerConfig
from turnrl.config.generation import ServiceConfig

RAY_MISSING = "Ray is not installed: pip install 'turnrl[ray]'"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


class EnvWorkerRole:
    """An env worker serving inside this actor's process (as ``turnrl env-worker --bind``)."""

    def start(self, threads: int, heartbeat_s: float) -> str:
        from turnrl.envs.zmq.worker import serve

        bound: queue.Queue = queue.Queue()
        endpoint = f"tcp://{_node_ip()}:*"

        def body() -> None:
            asyncio.run(serve(endpoint, f"ray-env-{os.getpid()}", threads, heartbeat_s, bind=True, on_bound=bound.put))

        threading.Thread(target=body, name="env-worker", daemon=True).start()
        return bound.get(timeout=120)

    def pid(self) -> int:
        return os.getpid()


class GenerationRole:
    """The generation service serving inside this actor's process."""

    def start(self, config_json: str) -> str:
        from turnrl.engine.generation.service import run_service

        fields = json.loads(config_json)
        fields["address"] = f"tcp://{_node_ip()}:{_free_port(_node_ip())}"
        config = msgspec.convert(fields, ServiceConfig)
        threading.Thread(target=run_service, args=(config,), name="generation", daemon=True).start()
        return config.address

    def pid(self) -> int:
        return os.getpid()


class LearnerRole:
    """One rank of the sharded learner; rank 0 also runs the loop (``distributed.train.run``)."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def rendezvous(self) -> tuple[str, int]:
        """(address, free port) on this actor's node: rank 0's become every rank's master address."""
        return _node_ip(), _free_port(_node_ip())

    def run(self, config_json: str, master: tuple[str, int]) -> str | None:
        from turnrl.config.toml_file import build
        from turnrl.engine.distributed.train import run

        os.environ.update(
            RANK=str(self.rank),
            LOCAL_RANK="0",
            WORLD_SIZE=str(self.world),
            MASTER_ADDR=master[0],
            MASTER_PORT=str(master[1]),
        )
        summary = run(build(json.loads(config_json)))
        return None if summary is None else json.dumps(summary, default=str)

    def pid(self) -> int:
        return os.getpid()


def _bundles(cfg: TrainConfig) -> list[dict[str, float]]:
    p = cfg.placement

    def bundle(cpus: float, gpus: float) -> dict[str, float]:
        return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}

    return (
        [bundle(p.cpus_per_learner, p.gpus_per_learner)] * p.learner_ranks
        + [bundle(p.cpus_per_generator, p.gpus_per_generator)]
        + [bundle(p.cpus_per_env_worker, 0.0)] * p.env_workers
    )


def run_job(cfg: TrainConfig, on_placed=None) -> dict:
    """Place every role, train, tear down; returns the run's summary. Needs ``ray.init`` done by the caller.

    ``on_placed(pids)``: called with the actors' process ids once every role is up."""
    try:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    except ImportError:
        raise RuntimeError(RAY_MISSING) from None
    if cfg.model.path is None:
        raise ValueError("a placed job needs model.path (a model directory every node can read)")
    p = cfg.placement
    bundles = _bundles(cfg)
    group = placement_group(bundles, strategy=p.strategy)
    actors = []

    def place(cls, index: int, *args):
        options = dict(
            num_cpus=bundles[index]["CPU"],
            num_gpus=bundles[index].get("GPU", 0),
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index),
        )
        actor = ray.remote(cls).options(**options).remote(*args)
        actors.append(actor)
        return actor

    try:
        ray.get(group.ready(), timeout=p.ready_timeout_s)
        learners = [place(LearnerRole, i, i, p.learner_ranks) for i in range(p.learner_ranks)]
        generation = place(GenerationRole, p.learner_ranks)
        envs = [place(EnvWorkerRole, p.learner_ranks + 1 + i) for i in range(p.env_workers)]
        worker_cfg = cfg.env.workers or EnvWorkerConfig()
        env_addresses = ray.get(
            [e.start.remote(worker_cfg.threads_per_worker, worker_cfg.heartbeat_s) for e in envs],
            timeout=p.ready_timeout_s,
        )
        generator = cfg.rollout.generator
        service = ServiceConfig(
            model_path=cfg.model.path,
            max_running=generator.max_running,
            kv_cache_tokens=cfg.rollout.kv_cache_tokens,
            in_flight=generator.in_flight,
            max_frame_bytes=generator.max_frame_bytes,
            device="cuda" if p.gpus_per_generator else "cpu",
            seed=cfg.seed,
        )
        service_address = ray.get(generation.start.remote(json.dumps(to_dict(service))), timeout=p.ready_timeout_s)
        master = ray.get(learners[0].rendezvous.remote(), timeout=p.ready_timeout_s)
        job = msgspec.structs.replace(
            cfg,
            env=msgspec.structs.replace(
                cfg.env, workers=msgspec.structs.replace(worker_cfg, workers=0, remote=tuple(env_addresses))
            ),
            rollout=msgspec.structs.replace(
                cfg.rollout,
                generator=msgspec.structs.replace(generator, kind="service", external=True, address=service_address),
            ),
        )
        if on_placed is not None:
            on_placed(ray.get([a.pid.remote() for a in actors]))
        text = json.dumps(to_dict(job))
        results = ray.get([learner.run.remote(text, master) for learner in learners])
        return json.loads(results[0])
    finally:
        for actor in actors:
            ray.kill(actor)
        remove_placement_group(group)


def main(argv: list[str] | None = None) -> int:
    from turnrl.config.toml_file import load

    parser = argparse.ArgumentParser(description="a turnrl job placed by Ray: learner ranks, generation, env workers")
    parser.add_argument("--config", required=True, help="the run's TOML file (its [placement] places the roles)")
    parser.add_argument("--set", action="append", default=[], help="key=value override (repeatable)")
    parser.add_argument("--address", default=None, help="a running Ray cluster (default: start a local one)")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config, args.set)
        if cfg.model.path is None:
            raise ValueError("a placed job needs model.path (a model directory every node can read)")
        import ray
    except ImportError:
        print(f"turnrl: error: {RAY_MISSING}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"turnrl: error: {exc}", file=sys.stderr)
        return 2
    ray.init(address=args.address, include_dashboard=False)
    try:
        summary = run_job(cfg)
    finally:
        ray.shutdown()
    print(json.dumps({"summary": summary.get("checkpoint")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
