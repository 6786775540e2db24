"""Serve any retriever over HTTP in Search-R1's ``/retrieve`` shape (what ``HTTPRetriever`` speaks).

    python -m turnrl.envs.search.server --port 8000        # BM25 over the default world

``POST /retrieve {"queries": [...], "topk": k, "return_scores": bool}`` -> ``{"result": [[hit, ...], ...]}``
with a hit ``{"contents": "\\"Title\\"\\ntext"}``, or ``{"document": {"contents": ...}, "score": 0.0}``
when ``return_scores`` (this server does not expose scores: 0.0). A malformed body (not JSON, a missing
``queries``, a wrong type, an unknown field) gets 422 with ``{"error": ...}`` naming it, and the server keeps
serving.

Invariant: the server only reads the retriever; requests are served one thread each, the
retriever behind a lock (bm25s is not documented as thread-safe).
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec

from turnrl.envs.search.retrievers import Retriever, make_retriever

MAX_BODY_BYTES = 1 << 20


class RetrieveBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A ``/retrieve`` request, read strictly: a missing ``queries``, a wrong type or an unknown field is a 422."""

    queries: list[str]
    topk: int = 3
    return_scores: bool = False


def _handler(retriever: Retriever, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/retrieve":
                return self._send(404, {"error": f"unknown path {self.path}"})
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY_BYTES:
                return self._send(422, {"error": f"body must be 1..{MAX_BODY_BYTES} bytes of JSON"})
            try:
                body = msgspec.json.decode(self.rfile.read(length), type=RetrieveBody, strict=True)
                with lock:
                    result = retriever.search(body.queries, body.topk)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as error:
                return self._send(422, {"error": f"bad request: {error}"})
            if body.return_scores:
                hits = [[{"document": {"contents": p.contents}, "score": 0.0} for p in row] for row in result]
            else:
                hits = [[{"contents": p.contents} for p in row] for row in result]
            return self._send(200, {"result": hits})

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_) -> None:  # quiet
            pass

    return Handler


@contextmanager
def serve_retriever(retriever: Retriever, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``retriever`` in a background thread; yields the ``/retrieve`` URL (port 0: a free port)."""
    server = ThreadingHTTPServer((host, port), _handler(retriever, threading.Lock()))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="retriever-server", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/retrieve"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve BM25 over the Deep Search world in Search-R1's shape")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--world-seed", type=int, default=0)
    args = parser.parse_args()
    from turnrl.envs.search.world import cached_world

    retriever = make_retriever("bm25", cached_world(args.world_seed).documents)
    with serve_retriever(retriever, args.host, args.port) as url:
        print(f"serving {url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
