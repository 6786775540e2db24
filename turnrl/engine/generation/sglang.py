"""A ``Generator`` over SGLang servers through their native HTTP API, with session affinity.

Invariants:
- token in, token out: a request sends ``input_ids`` and reads the sampled ids and their log-probs from
  ``meta_info.output_token_logprobs`` (``[logprob, token_id, text]`` per token); ids that disagree with
  ``output_ids`` are an error, never silently fixed. SGLang returns the log-prob it sampled with (temperature
  applied, as in ``sampling``; with ``top_p < 1`` its log-probs are those of the filtered distribution);
- all turns of one session (episode) go to the same server, so its prefix cache is reused; a new session goes to
  the server with the fewest requests in flight; ``end_session`` forgets the pairing;
- control calls (abort all, pause, continue, weight update) reach every server (sglang-router does not forward
  aborts); an abort by request id goes to the server running it;
- a token's weight version is the ``meta_info.weight_version`` the server reports when it is an integer (this
  client names versions with integers on update), else the version this client last set; SGLang reports one
  version per request.

Token-sequence constraints (``GenerateRequest.allowed``) have no SGLang counterpart and are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path

import httpx

from turnrl.config.generation import SGLangConfig
from turnrl.engine.generation.base import Generator
from turnrl.errors import GenerationTimeout, SGLangError
from turnrl.models.loading import save_policy
from turnrl.protocol import GenerateRequest, GenerateResult

_FINISH = {"stop": "stop", "length": "length", "abort": "abort"}


class SGLangGenerator(Generator):
    def __init__(self, config: SGLangConfig, initial_version: int = 0):
        self.config = config
        self.urls = [u.rstrip("/") for u in config.urls]
        self._version = initial_version
        self._client: httpx.AsyncClient | None = None
        self._sessions: dict[str, str] = {}  # session id -> server url
        self._in_flight = dict.fromkeys(self.urls, 0)
        self._running: dict[str, str] = {}  # request id -> server url
        self._round_robin = itertools.count()

    @property
    def weight_version(self) -> int:
        return self._version

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(
                max_connections=self.config.max_connections, max_keepalive_connections=self.config.max_connections
            )
            timeout = httpx.Timeout(None, connect=self.config.connect_timeout_s)
            self._client = httpx.AsyncClient(limits=limits, timeout=timeout)
        return self._client

    def server_for(self, session_id: str | None) -> str:
        if session_id is not None and session_id in self._sessions:
            return self._sessions[session_id]
        fewest = min(self._in_flight.values())
        candidates = [u for u in self.urls if self._in_flight[u] == fewest]
        url = candidates[next(self._round_robin) % len(candidates)]
        if session_id is not None:
            self._sessions[session_id] = url
        return url

    async def _post(self, url: str, path: str, body: dict, timeout_s: float | None = None) -> dict:
        try:
            response = await asyncio.wait_for(self._http().post(url + path, json=body), timeout_s)
        except httpx.HTTPError as exc:
            raise SGLangError(f"{url}{path}: {exc!r}") from exc
        if response.status_code != 200:
            raise SGLangError(f"{url}{path}: HTTP {response.status_code}: {response.text[:500]}")
        try:
            return response.json() if response.content else {}
        except ValueError as exc:
            raise SGLangError(f"{url}{path}: the reply is not JSON: {response.text[:200]!r}") from exc

    # ---- generation ---------------------------------------------------------------------------------------------
    def payload(self, request: GenerateRequest) -> dict:
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
            "rid": request.request_id,
            "stream": False,
        }

    async def generate(self, request: GenerateRequest) -> GenerateResult:
        body = self.payload(request)
        url = self.server_for(request.session_id)
        self._in_flight[url] += 1
        self._running[request.request_id] = url
        try:
            reply = await self._post(url, "/generate", body, self.config.request_timeout_s)
        except TimeoutError:
            await self._abort_on(url, request.request_id)
            raise GenerationTimeout(
                GenerateResult(
                    request_id=request.request_id, output_ids=[], logprobs=[], versions=[], finish_reason="timeout"
                )
            ) from None
        finally:
            self._in_flight[url] -= 1
            self._running.pop(request.request_id, None)
        return self.parse(request.request_id, reply)

    def parse(self, request_id: str, reply: dict) -> GenerateResult:
        try:
            meta = reply["meta_info"]
            triples = meta["output_token_logprobs"]
            finish = meta["finish_reason"]
        except (KeyError, TypeError) as exc:
            raise SGLangError(f"request {request_id!r}: reply lacks {exc} (was return_logprob honoured?)") from exc
        ids = [int(t[1]) for t in triples]
        logprobs = [float(t[0]) for t in triples]
        if "output_ids" in reply and list(reply["output_ids"]) != ids:
            raise SGLangError(f"request {request_id!r}: output_ids and output_token_logprobs disagree")
        kind = finish.get("type") if isinstance(finish, dict) else finish
        if kind not in _FINISH:
            raise SGLangError(f"request {request_id!r}: unknown finish_reason {finish!r}")
        reported = meta.get("weight_version")
        version = (
            int(reported) if isinstance(reported, int | str) and str(reported).lstrip("-").isdigit() else self._version
        )
        return GenerateResult(
            request_id=request_id,
            output_ids=ids,
            logprobs=logprobs,
            versions=[version] * len(ids),
            finish_reason=_FINISH[kind],
        )

    async def end_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    # ---- control (every server) ---------------------------------------------------------------------------------
    async def _abort_on(self, url: str, request_id: str) -> None:
        with contextlib.suppress(SGLangError, TimeoutError):  # the request is given up either way
            await self._post(url, "/abort_request", {"rid": request_id}, 10.0)

    async def abort(self, request_id: str) -> None:
        url = self._running.get(request_id)
        await asyncio.gather(*(self._abort_on(u, request_id) for u in ([url] if url else self.urls)))

    async def _everywhere(self, path: str, body: dict) -> list[dict]:
        return list(await asyncio.gather(*(self._post(u, path, body) for u in self.urls)))

    async def abort_all(self) -> None:
        await self._everywhere("/abort_request", {"abort_all": True})

    async def pause(self, mode: str = "in_place") -> None:
        if mode not in ("abort", "in_place", "retract"):
            raise ValueError(f"mode must be 'abort', 'in_place' or 'retract', got {mode!r}")
        await self._everywhere("/pause_generation", {"mode": mode})

    async def resume(self) -> None:
        await self._everywhere("/continue_generation", {})

    async def update_weights(self, path: str, version: int | None = None) -> int:
        """Every server loads the weights saved at ``path`` (a directory they can read); returns the new version."""
        new = version if version is not None else self._version + 1
        replies = await self._everywhere("/update_weights_from_disk", {"model_path": path, "weight_version": str(new)})
        failed = [(u, r.get("message")) for u, r in zip(self.urls, replies, strict=True) if not r.get("success")]
        if failed:
            raise SGLangError(f"update_weights_from_disk failed on {failed}")
        self._version = new
        return new

    async def push_weights(self, model, tokenizer, staging_dir: Path) -> int:
        """Save ``model`` under ``staging_dir`` (a directory every server can read) and load it everywhere."""
        await asyncio.to_thread(save_policy, model, tokenizer, staging_dir)
        return await self.update_weights(str(Path(staging_dir).resolve()), version=self.weight_version + 1)

    async def healthy(self) -> bool:
        try:
            responses = await asyncio.gather(*(self._http().get(u + "/health") for u in self.urls))
        except httpx.HTTPError:
            return False
        return all(r.status_code == 200 for r in responses)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
