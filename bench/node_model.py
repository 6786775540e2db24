"""A GPU node in a model, under turnrl's own training loop: the latency-model variant of the async benchmark.

The real ``Trainer`` runs (producer, ``TrajectoryBuffer`` with its staleness bound, episodes, records) on a virtual
clock (``virtual_time.py``: modelled seconds cost no wall time, and the machine's load cannot stretch them); only
the parts that need GPUs are replaced by costs: decode steps (``LatencyModelGenerator``: continuous batching, one
server per generating GPU), the learner's update (tokens over the training GPUs' throughput) and the weight
transfer. The synchronous run is the colocated layout (all GPUs generate, then all train, weights switched in
place); the asynchronous runs split the node (some GPUs generate while the others train, new weights broadcast
while decoding pauses).

Invariants:
- every cost is a pure function of the work and ``NodeCosts`` (printed beside the figures), in virtual seconds;
  runs differ only in how the loop overlaps them, and a run's figures are the same on any machine;
- the work is the same in every run: step s's tasks are the sampler's, an episode's turns and env latencies
  depend on its item, a turn's token count on its group and turn (``Workload``);
- every token carries the version of the decode step that sampled it, so the buffer's staleness check is exact.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import torch
from virtual_time import VirtualClockLoop

from turnrl.bench.latency_model import LatencyModelGenerator, SyntheticEnv, Workload, WorkloadConfig
from turnrl.bench.presets import synthetic_episode_config
from turnrl.config import TrainConfig
from turnrl.engine.eval.heldout import HeldOutEvaluator
from turnrl.engine.generation.base import Generator, GeneratorStats
from turnrl.engine.records.loggers import MetricsLogger
from turnrl.engine.rollout.curriculum import TurnCapSchedule
from turnrl.engine.rollout.run import EnvPool
from turnrl.engine.rollout.sampler import TaskSampler
from turnrl.engine.training.loop import Trainer
from turnrl.engine.training.setup import TrainingRun
from turnrl.models.chat import ChatFormat
from turnrl.models.tokenizer import train_tokenizer
from turnrl.protocol import GenerateRequest, GenerateResult, Trajectory


class NodeCosts(msgspec.Struct, frozen=True, kw_only=True):
    """What a step costs on the node, besides decoding (whose costs are the workload's)."""

    gpus: int = 8
    train_tokens_per_s_per_gpu: float = 5000.0  # 7B: forward + backward + reference forward at ~35% MFU
    update_fixed_s: float = 4.0  # optimizer step, gradient reduction, bookkeeping
    prompt_tokens: int = 512  # trained context per episode besides its turns
    observation_tokens: int = 128  # trained context per env observation
    colocated_switch_s: float = 6.0  # synchronous: offload the trainer, load weights into the servers, per update
    broadcast_s: float = 3.0  # asynchronous: new weights (14 GB bf16) broadcast; decoding pauses this long

    def __post_init__(self) -> None:
        if self.gpus < 2:
            raise ValueError(f"gpus must be >= 2 (one to generate, one to train), got {self.gpus}")
        if not self.train_tokens_per_s_per_gpu > 0:
            raise ValueError(f"train_tokens_per_s_per_gpu must be > 0, got {self.train_tokens_per_s_per_gpu}")
        for name in ("update_fixed_s", "prompt_tokens", "observation_tokens", "colocated_switch_s", "broadcast_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def update_seconds(self, tokens: int, train_gpus: int) -> float:
        return self.update_fixed_s + tokens / (self.train_tokens_per_s_per_gpu * train_gpus)


# The workloads: decode costs of a 7B server on one GPU (the rollout benchmark's server model).
PRESETS: dict[str, WorkloadConfig] = {
    # multi-turn agents (AgentGym-like): short replies, tool/env calls with a long latency tail
    "agentic": WorkloadConfig(
        episodes=4096,
        max_turns=10,
        tokens_median=160.0,
        tokens_p99=1024.0,
        tokens_cap=1024,
        env_median_s=0.5,
        env_p99_s=10.0,
        env_cap_s=30.0,
    ),
    # one long reasoning answer per task (AReaL's setting): decode-bound with a long length tail
    "reasoning": WorkloadConfig(
        episodes=4096,
        max_turns=1,
        tokens_median=2000.0,
        tokens_p99=12000.0,
        tokens_cap=12288,
        env_median_s=0.001,
        env_p99_s=0.002,
        env_cap_s=0.01,
    ),
}


def _group_turn_tokens(workload: Workload):
    def tokens_of(request: GenerateRequest) -> int:
        group = int(request.session_id.split("-")[2])  # the episode runner's "<env>-<item>-<group>-<n>"
        turn = int(request.request_id.rsplit("-", 1)[1])
        return int(workload.tokens[group % workload.config.episodes, turn])

    return tokens_of


class NodeGenerator(Generator):
    """``servers`` modelled servers; a session stays on the least loaded server of its first turn."""

    def __init__(self, workload: Workload, servers: int, load_seconds: float):
        tokens_of = _group_turn_tokens(workload)
        self.servers = [LatencyModelGenerator(workload, tokens_of=tokens_of) for _ in range(servers)]
        self.load_seconds = load_seconds
        self._sessions: dict[str, LatencyModelGenerator] = {}
        self._load = dict.fromkeys(range(servers), 0)
        self._version = 0

    @property
    def weight_version(self) -> int:
        return self._version

    async def generate(self, request: GenerateRequest) -> GenerateResult:
        server = self._sessions.get(request.session_id)
        if server is None:
            index = min(self._load, key=self._load.get)
            server = self._sessions[request.session_id] = self.servers[index]
        index = self.servers.index(server)
        self._load[index] += 1
        try:
            return await server.generate(request)
        finally:
            self._load[index] -= 1

    async def push_weights(self, model, tokenizer, staging_dir: Path) -> int:
        for server in self.servers:
            server.hold(self.load_seconds)
        await asyncio.sleep(self.load_seconds)
        for server in self.servers:
            server.bump_version()
        self._version += 1
        return self._version

    async def stats(self) -> GeneratorStats:
        return GeneratorStats(
            weight_version=self._version,
            tokens_generated=sum(s.tokens for s in self.servers),
            busy_seconds=sum(s.busy_s for s in self.servers) / len(self.servers),
        )

    async def end_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def close(self) -> None:
        for server in self.servers:
            await server.close()


class NodeLearner:
    """The learner's update as its modelled duration on ``train_gpus`` GPUs: it blocks its thread (the training loop
    runs it off the event loop, as a real one) for that many virtual seconds."""

    def __init__(self, costs: NodeCosts, train_gpus: int, loop: VirtualClockLoop):
        self.costs, self.train_gpus, self.loop = costs, train_gpus, loop
        self.busy_s = 0.0

    def tokens(self, trajectory: Trajectory) -> int:
        c = self.costs
        return c.prompt_tokens + len(trajectory.turns) * c.observation_tokens + trajectory.num_policy_tokens

    def update(self, trajectories: list[Trajectory]) -> dict:
        tokens = sum(self.tokens(t) for t in trajectories)
        seconds = self.costs.update_seconds(tokens, self.train_gpus)
        self.loop.sleep_in_thread(seconds)
        self.busy_s += seconds
        return {"modelled_tokens": tokens, "modelled_update_s": seconds}


class _ModelledTrainer(Trainer):
    async def _finish(self, run: TrainingRun, rl_seconds: float) -> dict:
        return {}  # no final evaluation, checkpoint or plot: the run's time is the loop's virtual time


def _chat() -> tuple[ChatFormat, object]:
    texts = [f"episode {i} ok done" for i in range(200)] + ["synthetic"]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    return ChatFormat(tokenizer), tokenizer


def run_modelled(
    config: TrainConfig, workload_config: WorkloadConfig, costs: NodeCosts, generation_gpus: int | None
) -> dict:
    """One training run on the modelled node: ``generation_gpus=None`` is the colocated (synchronous) layout."""
    workload = Workload(workload_config)
    colocated = generation_gpus is None
    servers = costs.gpus if colocated else generation_gpus
    train_gpus = costs.gpus if colocated else costs.gpus - generation_gpus
    if not 0 < servers <= costs.gpus or train_gpus < 1:
        raise ValueError(f"generation GPUs must leave at least one of {costs.gpus} to train, got {generation_gpus}")
    load_seconds = costs.colocated_switch_s if colocated else costs.broadcast_s
    episode = synthetic_episode_config(workload)
    config = msgspec.structs.replace(config, rollout=msgspec.structs.replace(config.rollout, episode=episode))
    chat, tokenizer = _chat()
    generator = NodeGenerator(workload, servers, load_seconds)
    pool = EnvPool(lambda: SyntheticEnv(workload))
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = TrainingRun(
        config=config,
        run_dir=run_dir,
        model=torch.nn.Linear(1, 1),
        tokenizer=tokenizer,
        chat=chat,
        generator=generator,
        learner=None,  # set on the virtual loop, below
        schedule=TurnCapSchedule(config.curriculum, "synthetic", episode.turn_cap),
        pool=pool,
        sampler=TaskSampler(
            "synthetic",
            range(workload.config.episodes),
            config.rollout.prompts_per_step,
            config.rollout.group_size,
            config.seed,
        ),
        heldout=HeldOutEvaluator([], pool, generator, chat, episode),
        metrics=MetricsLogger(run_dir),
        evals=[{"step": 0, "success_rate": 0.0}],  # nothing to evaluate: a modelled policy does not learn
        seconds={"start": time.perf_counter(), "warmup": 0.0},
    )

    async def go() -> float:
        loop = asyncio.get_running_loop()
        run.learner = NodeLearner(costs, train_gpus, loop)
        start = loop.time()
        try:
            await _ModelledTrainer(config)._train(run)
        finally:
            await run.close()
        return loop.time() - start

    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        seconds = runner.run(go())
    return {
        "layout": "colocated" if colocated else f"{servers} generate / {train_gpus} train",
        "generation_gpus": servers,
        "train_gpus": train_gpus,
        "rl_seconds": seconds,
        "generator_busy": sum(s.busy_s for s in generator.servers) / servers,
        "learner_busy": run.learner.busy_s,
    }
