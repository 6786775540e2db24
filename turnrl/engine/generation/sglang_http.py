"""HTTP to SGLang servers: one connection pool per server, retries on connection errors, a readiness wait.

Invariants:
- each server has its own ``httpx.AsyncClient`` (its own connection cap), whose idle connections expire before
  the server's own 5 s keep-alive does, so a request never goes out on a connection the server has closed;
- a call that fails to connect, or whose connection drops before any reply, is sent again after a back-off
  (``retry_backoff_s * 2**k``) at most ``retries`` times, then raises ``SGLangError`` naming the server and path;
  a reply, whatever its status, is never retried here (the caller reads it);
- ``wait_ready`` returns once every server answers ``/health_generate`` with 200 (SGLang answers 503 while it
  loads) and raises ``SGLangError`` naming the servers still not ready after ``ready_timeout_s``.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from turnrl.config.generation import SGLangOptions
from turnrl.errors import SGLangError

# errors raised before the server could have answered: sending again is safe
RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError)


class Reply:
    """A server's answer: HTTP status and the decoded JSON body (``{"message": text}`` when not JSON)."""

    def __init__(self, url: str, path: str, status: int, body: dict):
        self.url, self.path, self.status, self.body = url, path, status, body

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.body.get("success", True) is not False

    @property
    def message(self) -> str:
        return str(self.body.get("message") or self.body.get("error") or self.body)[:500]

    def describe(self) -> str:
        return f"{self.url}{self.path}: HTTP {self.status}: {self.message}"


class SGLangHTTP:
    def __init__(self, options: SGLangOptions):
        self.options = options
        self._clients: dict[str, httpx.AsyncClient] = {}
        self.retried = 0  # calls sent again after a connection error (cumulative)

    def client(self, url: str) -> httpx.AsyncClient:
        if url not in self._clients:
            o = self.options
            limits = httpx.Limits(
                max_connections=o.max_connections_per_server,
                max_keepalive_connections=o.max_connections_per_server,
                keepalive_expiry=o.keepalive_expiry_s,
            )
            timeout = httpx.Timeout(None, connect=o.connect_timeout_s)
            self._clients[url] = httpx.AsyncClient(limits=limits, timeout=timeout)
        return self._clients[url]

    async def call(
        self,
        url: str,
        path: str,
        body: dict | None = None,
        *,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """Send one call (retrying connection errors); ``TimeoutError`` when ``timeout_s`` passes first."""
        attempt = 0
        while True:
            try:
                request = self.client(url).request(method, url + path, json=body, headers=headers)
                response = await asyncio.wait_for(request, timeout_s)
                break
            except RETRYABLE as exc:
                if attempt >= self.options.retries:
                    raise SGLangError(f"{url}{path}: {exc!r} (after {attempt + 1} attempts)") from exc
                await asyncio.sleep(self.options.retry_backoff_s * 2**attempt)
                attempt += 1
                self.retried += 1
            except httpx.HTTPError as exc:
                raise SGLangError(f"{url}{path}: {exc!r}") from exc
        try:
            parsed = response.json() if response.content else {}
        except ValueError:
            parsed = {"message": response.text}
        if not isinstance(parsed, dict):
            parsed = {"message": str(parsed)}
        return Reply(url, path, response.status_code, parsed)

    async def post_ok(self, url: str, path: str, body: dict, timeout_s: float | None = None) -> dict:
        """A call whose failure (any status but 200, or ``success: false``) is an ``SGLangError``."""
        reply = await self.call(url, path, body, timeout_s=timeout_s)
        if not reply.ok:
            raise SGLangError(reply.describe())
        return reply.body

    async def wait_ready(self, urls: list[str], poll_s: float = 0.5) -> None:
        deadline = time.monotonic() + self.options.ready_timeout_s
        waiting = list(urls)
        last: dict[str, str] = {}
        while waiting:
            for url in list(waiting):
                try:
                    response = await self.client(url).get(url + "/health_generate", timeout=max(poll_s, 5.0))
                    if response.status_code == 200:
                        waiting.remove(url)
                        continue
                    last[url] = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last[url] = repr(exc)
            if not waiting:
                return
            if time.monotonic() >= deadline:
                states = ", ".join(f"{u} ({last.get(u, 'no answer')})" for u in waiting)
                raise SGLangError(
                    f"SGLang servers not ready after {self.options.ready_timeout_s:g} s "
                    f"(GET /health_generate): {states}"
                )
            await asyncio.sleep(poll_s)

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()
