"""A ``Generator`` over SGLang servers (>= 0.5.23) through their native HTTP API.

Invariants:
- token in, token out: a request sends ``input_ids`` and reads the sampled ids and their log-probs from
  ``meta_info.output_token_logprobs`` (``[logprob, token_id, text]`` per token); ids that disagree with
  ``output_ids`` are an error, never silently fixed. SGLang returns the log-prob it sampled with (temperature
  applied, as in ``sampling``; with ``top_p < 1`` its log-probs are those of the filtered distribution);
- a token's weight version is read from the reply's per-token ``meta_info.weight_versions`` spans (versions are
  named by this client's integers); a reply without them stamps every token with ``weight_version``;
- an SGLang request id is this request's id behind a random per-process prefix and an attempt number, so two
  processes sharing a server (training and ``turnrl eval``) never collide;
- a request the server aborted (a pause in ``abort`` mode, an update that aborts requests) is resumed from its
  partial output (``partial.generate_resuming``); one this client aborted (``abort``, a timeout) is not;
- routing: see ``sglang_routing`` (a GRPO group on one server; sglang-router's ``manual`` policy by key);
  control calls (abort all, pause, continue, weight updates, memory) reach every server, never the router;
- ``push_weights`` pauses the servers (``retract`` when running requests continue under the new weights,
  ``abort`` when they are resumed), updates them all or reports which did not (``sglang_weights``), continues
  them, and only then counts the new version; with ``in_place`` pauses the cache is flushed after continuing;
- after ``wait_ready`` every server answered ``/health_generate``; ``open_generator`` waits before training.

Token-sequence constraints (``GenerateRequest.allowed``) have no SGLang counterpart and are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from pathlib import Path

from turnrl.config.generation import SGLANG_MIN_VERSION, SGLangConfig
from turnrl.engine.generation.base import Generator, GeneratorStats
from turnrl.engine.generation.partial import generate_resuming
from turnrl.engine.generation.sglang_http import SGLangHTTP
from turnrl.engine.generation.sglang_routing import ServerRouter
from turnrl.engine.generation.sglang_weights import SGLangWeights, slot_dir
from turnrl.errors import GenerationTimeout, SGLangError
from turnrl.models.loading import save_policy
from turnrl.protocol import GenerateRequest, GenerateResult

_FINISH = {"stop": "stop", "length": "length", "abort": "abort"}
PAUSE_MODES = ("abort", "in_place", "retract")


class SGLangGenerator(Generator):
    def __init__(self, config: SGLangConfig, initial_version: int = 0):
        self.config = config
        self.options = config.options
        self.servers = config.servers
        router_url = config.urls[0].rstrip("/") if self.options.routing == "router" else None
        self.router = ServerRouter(self.servers, router_url)
        self.http = SGLangHTTP(self.options)
        self.weights = SGLangWeights(self.http, self.servers, self.options)
        self._version = initial_version
        self._launch_version = initial_version  # what a server that was never updated by this client serves
        self._paused_by_caller: str | None = None
        self._rid_prefix = uuid.uuid4().hex[:12]
        self._attempts = itertools.count()
        self._running: dict[str, tuple[str, str]] = {}  # request id -> (server, SGLang rid)
        self._aborted_here: set[str] = set()
        self._finished = 0
        self._tokens = 0
        self.resumed = 0  # submissions that resumed a server-aborted request's partial output

    @property
    def weight_version(self) -> int:
        return self._version

    @property
    def urls(self) -> list[str]:
        return self.servers

    @property
    def _sessions(self) -> dict[str, str]:
        return self.router.sessions

    def server_for(self, session_id: str | None, group_key: str | None = None) -> str:
        return self.router.server_for(session_id, group_key)

    async def wait_ready(self, poll_s: float = 0.5) -> None:
        """Every server answers ``/health_generate`` and runs SGLang >= ``SGLANG_MIN_VERSION``."""
        await self.http.wait_ready(self.servers + ([self.router.router_url] if self.router.router_url else []), poll_s)
        replies = await asyncio.gather(*(self.http.call(u, "/server_info", method="GET") for u in self.servers))
        old = [
            f"{r.url} runs SGLang {r.body['version']}"
            for r in replies
            if r.status == 200 and _release(r.body.get("version")) < _release(SGLANG_MIN_VERSION)
        ]
        if old:
            raise SGLangError(
                f"{'; '.join(old)}: turnrl needs SGLang >= {SGLANG_MIN_VERSION} (per-token weight versions, pauses "
                "that keep their mode, the begin/end weight-update bracket)"
            )

    # ---- generation ---------------------------------------------------------------------------------------------
    def payload(self, request: GenerateRequest, rid: str | None = None) -> dict:
        if request.allowed is not None:
            raise ValueError(
                "allowed: token-sequence constraints have no SGLang counterpart; SGLangGenerator refuses them"
            )
        if not request.input_ids:
            raise ValueError("input_ids must not be empty")
        s = request.sampling
        return {
            "input_ids": list(request.input_ids),
            "sampling_params": {
                "max_new_tokens": s.max_new_tokens,
                "temperature": s.temperature,
                "top_p": s.top_p,
                "stop_token_ids": list(s.stop_token_ids),
                "skip_special_tokens": False,
                "no_stop_trim": True,
            },
            "return_logprob": True,
            "rid": rid or request.request_id,
            "stream": False,
        }

    def new_rid(self, request_id: str) -> str:
        return f"{self._rid_prefix}-{request_id}-{next(self._attempts)}"

    async def generate(self, request: GenerateRequest) -> GenerateResult:
        self.payload(request)  # refuse what cannot be served before anything is sent
        if self.weights.inconsistent:
            raise SGLangError(f"the servers hold different weights ({self.weights.inconsistent}); push new weights")
        self._aborted_here.discard(request.request_id)
        try:
            result = await generate_resuming(self._send, request, self.options.resume_attempts)
        finally:
            self._aborted_here.discard(request.request_id)
        self._finished += 1
        self._tokens += len(result.output_ids)
        return result

    async def _send(self, request: GenerateRequest) -> tuple[GenerateResult, bool]:
        rid = self.new_rid(request.request_id)
        body = self.payload(request, rid)
        post_to, headers, server = self.router.target(request.session_id, request.group_key)
        self.router.acquire(server)
        self._running[request.request_id] = (server, rid)
        try:
            timeout = self.config.request_timeout_s
            reply = await self.http.call(post_to, "/generate", body, headers=headers, timeout_s=timeout)
        except TimeoutError:
            await self._abort_on(server, rid)
            raise GenerationTimeout(
                GenerateResult(
                    request_id=request.request_id, output_ids=[], logprobs=[], versions=[], finish_reason="timeout"
                )
            ) from None
        finally:
            self.router.release(server)
            self._running.pop(request.request_id, None)
        if reply.status != 200:
            raise SGLangError(reply.describe())
        result = self.parse(request.request_id, reply.body)
        resume = result.finish_reason == "abort" and request.request_id not in self._aborted_here
        self.resumed += resume
        return result, resume

    def parse(self, request_id: str, reply: dict) -> GenerateResult:
        try:
            meta = reply["meta_info"]
            finish = meta["finish_reason"]
        except (KeyError, TypeError) as exc:
            raise SGLangError(f"request {request_id!r}: reply lacks {exc} (was return_logprob honoured?)") from exc
        kind = finish.get("type") if isinstance(finish, dict) else finish
        if kind not in _FINISH:
            raise SGLangError(f"request {request_id!r}: unknown finish_reason {finish!r}")
        triples = meta.get("output_token_logprobs")
        if triples is None:
            if kind == "abort" and not reply.get("output_ids"):
                triples = []  # aborted before its first token
            else:
                raise SGLangError(f"request {request_id!r}: reply lacks 'output_token_logprobs' (return_logprob?)")
        ids = [int(t[1]) for t in triples]
        logprobs = [float(t[0]) for t in triples]
        if "output_ids" in reply and list(reply["output_ids"]) != ids:
            raise SGLangError(f"request {request_id!r}: output_ids and output_token_logprobs disagree")
        return GenerateResult(
            request_id=request_id,
            output_ids=ids,
            logprobs=logprobs,
            versions=self.token_versions(request_id, meta, len(ids)),
            finish_reason=_FINISH[kind],
        )

    def token_versions(self, request_id: str, meta: dict, count: int) -> list[int]:
        spans = meta.get("weight_versions")
        if not spans:
            return [_as_version(meta.get("weight_version"), self._launch_version)] * count
        versions: list[int] = []
        for span in spans:
            try:
                start, end, name = int(span["start"]), int(span["end"]), span["version"]
            except (KeyError, TypeError, ValueError) as exc:
                raise SGLangError(f"request {request_id!r}: bad weight_versions span {span!r}") from exc
            if start != len(versions) or end < start:
                raise SGLangError(f"request {request_id!r}: weight_versions spans {spans!r} do not tile the output")
            versions += [_as_version(name, self._launch_version)] * (end - start)
        if len(versions) < count:  # a span list that stops early covers the rest with its last version
            versions += [versions[-1] if versions else self._version] * (count - len(versions))
        return versions[:count]

    async def end_session(self, session_id: str) -> None:
        self.router.end_session(session_id)

    async def stats(self) -> GeneratorStats:
        return GeneratorStats(
            weight_version=self._version, requests_finished=self._finished, tokens_generated=self._tokens
        )

    # ---- control (every server) ---------------------------------------------------------------------------------
    async def _abort_on(self, url: str, rid: str) -> None:
        with contextlib.suppress(SGLangError, TimeoutError):  # the request is given up either way
            await self.http.call(url, "/abort_request", {"rid": rid}, timeout_s=10.0)

    async def abort(self, request_id: str) -> None:
        """Abort one request; its answer is what it had sampled, ``finish_reason`` ``abort`` (not resumed)."""
        self._aborted_here.add(request_id)
        where = self._running.get(request_id)
        if where is None:
            return
        server, rid = where
        targets = self.servers if server == self.router.router_url else [server]
        await asyncio.gather(*(self._abort_on(u, rid) for u in targets))

    async def _everywhere(self, path: str, body: dict) -> list[dict]:
        return list(await asyncio.gather(*(self.http.post_ok(u, path, body) for u in self.servers)))

    async def abort_all(self) -> None:
        self._aborted_here.update(self._running)
        await self._everywhere("/abort_request", {"abort_all": True})

    async def pause(self, mode: str = "in_place") -> None:
        if mode not in PAUSE_MODES:
            raise ValueError(f"mode must be 'abort', 'in_place' or 'retract', got {mode!r}")
        await self._everywhere("/pause_generation", {"mode": mode})
        self._paused_by_caller = mode

    async def resume(self) -> None:
        await self._everywhere("/continue_generation", {})
        self._paused_by_caller = None
        await self.weights.flush_pending_caches()

    async def flush_cache(self) -> None:
        """Flush every server's prefix cache (SGLang refuses, HTTP 400, while requests run)."""
        await self._everywhere("/flush_cache", {})

    async def release_memory(self, tags: list[str] | None = None) -> None:
        """Colocated mode: the servers free their GPU memory (weights and KV cache) for the learner."""
        await self.weights.release_memory(tags)

    async def resume_memory(self, tags: list[str] | None = None) -> None:
        await self.weights.resume_memory(tags)

    async def yield_accelerator(self) -> None:
        if self.options.colocated and not self.weights.released:
            await self.weights.release_memory()

    def _pause_mode(self) -> str:
        return "retract" if self.config.in_flight == "continue" else "abort"

    async def _updating(self, update, version: int) -> int:
        """Run ``update`` with generation paused: by the caller already (their mode, their ``resume``), else here
        (``retract`` or ``abort`` by ``in_flight``). Under ``in_place`` the update does not flush (SGLang would
        refuse while requests hold their cache); the flush follows the caller's ``resume``."""
        caller = self._paused_by_caller
        mode = caller or self._pause_mode()
        if self.options.colocated and self.weights.released:
            await self.weights.resume_memory(["weights"])
        if caller is None:
            await self._everywhere("/pause_generation", {"mode": mode})
        try:
            await update(flush_cache=mode != "in_place")
            self._version = version
            if mode == "in_place":
                self.weights.flush_pending.update(self.servers)
        finally:
            if caller is None:
                await self._everywhere("/continue_generation", {})
            if self.options.colocated and self.weights.released:
                await self.weights.resume_memory(["kv_cache"])
        if caller is None:
            await self.weights.flush_pending_caches()
        return version

    async def update_weights(self, path: str, version: int | None = None) -> int:
        """Every server loads the weights saved at ``path`` (a directory they can read); returns the new version."""
        new = version if version is not None else self._version + 1

        async def update(flush_cache: bool) -> None:
            await self.weights.from_disk(path, new, flush_cache)

        return await self._updating(update, new)

    async def push_weights(self, model, tokenizer, staging_dir: Path) -> int:
        """Serve ``model``'s weights: broadcast (``weight_sync = "nccl"``) or saved under ``staging_dir``."""
        new = self._version + 1
        if self.options.weight_sync == "nccl":
            device = next(model.parameters()).device if self.options.nccl_backend == "nccl" else "cpu"
            tensors = list(model.state_dict().items())

            async def update(flush_cache: bool) -> None:
                await self.weights.broadcast(tensors, new, flush_cache, device)

            return await self._updating(update, new)
        path = slot_dir(staging_dir, new)
        await asyncio.to_thread(save_policy, model, tokenizer, path)
        return await self.update_weights(str(path.resolve()), version=new)

    async def healthy(self) -> bool:
        try:
            replies = await asyncio.gather(*(self.http.call(u, "/health", method="GET") for u in self.servers))
        except SGLangError:
            return False
        return all(r.status == 200 for r in replies)

    async def close(self) -> None:
        await self.weights.close()
        await self.http.close()


def _release(text) -> tuple[int, ...]:
    """``"0.5.23.post1"`` -> ``(0, 5, 23)``; a missing or unreadable version reads as new enough."""
    parts = []
    for piece in str(text).split(".") if isinstance(text, str) else []:
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) if parts else (10**9,)


def _as_version(reported, fallback: int) -> int:
    text = str(reported) if isinstance(reported, int | str) else ""
    return int(text) if text.lstrip("-").isdigit() else fallback
