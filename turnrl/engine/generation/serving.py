"""The generator a training run asks for: in process, a GenerationService process it starts (or one started
elsewhere, by address), or SGLang servers.

Invariant: the returned generator starts at ``weight_version`` (a resumed run continues its count) and serves the
learner's current weights; ``close()`` on it also stops a service process started here; SGLang servers have
answered ``/health_generate`` before it is returned.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from turnrl.config.generation import GeneratorConfig, ServiceConfig, SGLangConfig
from turnrl.engine.generation.base import Generator
from turnrl.engine.generation.local import LocalGenerator
from turnrl.models.loading import save_policy


async def open_generator(
    config: GeneratorConfig,
    model,
    tokenizer,
    run_dir: Path,
    *,
    seed: int,
    max_batch: int,
    kv_cache_tokens: int,
    weight_version: int = 0,
    staleness: int = 0,
) -> Generator:
    """``staleness`` (the run's eta) decides ``weights="auto"``: with eta > 0 the in-process generator keeps its
    own copy of the weights, so that generation goes on while the learner updates."""
    staging = staging_dir(run_dir)
    if config.kind == "local":
        return LocalGenerator(
            model,
            tokenizer.pad_token_id,
            max_batch=max_batch,
            seed=seed,
            kv_cache_tokens=kv_cache_tokens,
            weight_version=weight_version,
            copy_weights=config.weights == "copy" or (config.weights == "auto" and staleness > 0),
            in_flight=config.in_flight,
        )
    if config.kind == "service" and config.external:
        from turnrl.engine.generation.service_client import ServiceGenerator

        generator = ServiceGenerator(
            config.address, request_timeout_s=config.request_timeout_s, max_frame_bytes=config.max_frame_bytes
        )
        if weight_version:  # a resumed run
            await _resume_external(generator, model, weight_version)
        return generator
    if config.kind == "service":
        from turnrl.engine.generation.service_client import ServiceGenerator, ServiceProcess

        await asyncio.to_thread(save_policy, model, tokenizer, staging)
        address = config.address or f"ipc://{(Path(run_dir) / 'generation.sock').resolve()}"
        process = ServiceProcess(
            ServiceConfig(
                model_path=str(staging),
                address=address,
                seed=seed,
                max_running=config.max_running,
                kv_cache_tokens=kv_cache_tokens,
                in_flight=config.in_flight,
                max_frame_bytes=config.max_frame_bytes,
                torch_threads=config.torch_threads,
            )
        )
        await asyncio.to_thread(process.start)
        generator = ServiceGenerator(  # a service process that dies or hangs is restarted, its requests resubmitted
            address,
            request_timeout_s=config.request_timeout_s,
            owned_process=process,
            max_frame_bytes=config.max_frame_bytes,
            supervise=True,
            hang_timeout_s=120.0,  # silent that long: hung, not slow (a loaded machine is slow)
        )
        if weight_version:  # a resumed run: the service starts at 0
            await generator.update_weights(path=str(staging), version=weight_version)
        return generator
    from turnrl.engine.generation.sglang import SGLangGenerator

    if config.sglang.colocated and staleness > 0:
        raise ValueError(
            "rollout.generator.sglang.colocated: servers that free the learner's GPUs cannot generate while it "
            f"trains; use rollout.staleness = 0 (got {staleness}) or separate GPUs"
        )
    sglang = SGLangConfig(
        urls=list(config.urls),
        request_timeout_s=config.request_timeout_s,
        options=config.sglang,
        in_flight=config.in_flight,
    )
    generator = SGLangGenerator(sglang, initial_version=weight_version - 1 if weight_version else 0)
    try:
        await generator.wait_ready()  # SGLang answers 503 while it loads: no request before it is ready
        if weight_version:  # a resumed run: the servers hold the weights they were launched with
            await generator.push_weights(model, tokenizer, staging)
    except BaseException:
        await generator.close()
        raise
    return generator


async def _resume_external(generator, model, weight_version: int) -> None:
    """A service started elsewhere holds version ``weight_version`` (this run's, untouched since the checkpoint),
    an older one (it was restarted) or a newer one (the run went on past its checkpoint): send the checkpoint's
    weights unless it holds exactly them; versions only grow."""
    current = (await generator.service_stats()).weight_version
    if current == weight_version:
        return
    tensors = {name: t.detach().cpu() for name, t in model.state_dict().items()}
    await generator.update_weights(tensors=tensors, version=max(weight_version, current + 1))


def staging_dir(run_dir: Path) -> Path:
    """Where a run writes weights for generators that load them from disk."""
    return Path(run_dir) / "serving_weights"
