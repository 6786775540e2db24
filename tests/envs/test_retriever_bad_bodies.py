"""The retrieval server answers every bad body (too deep to parse, too large, not JSON) with a JSON error and
keeps serving; the client can always read that answer."""

from __future__ import annotations

import http.client

import pytest

from turnrl.envs.search.retrievers import Passage, Retriever
from turnrl.envs.search.server import MAX_BODY_BYTES, serve_retriever


class EchoRetriever(Retriever):
    """One passage per query, naming it: enough to check a valid request after the bad ones."""

    def search(self, queries, topk):
        if isinstance(queries, str) or not all(isinstance(q, str) for q in queries):
            raise ValueError("queries must be strings")
        return [[Passage(title=q, text="t")] for q in queries]


def _post(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/retrieve", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000 + b"]" * 5000,  # nested past the JSON parser's recursion limit
        b'{"queries": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"x" * (MAX_BODY_BYTES + 1),  # too large: read and answered, not reset
        b"\xff\xfe not json",
        b'{"queries": [1, 2]}',
        b'["queries"]',
    ],
)
def test_bad_body_gets_a_json_error_and_the_server_keeps_serving(body):
    with serve_retriever(EchoRetriever()) as url:
        port = int(url.split(":")[2].split("/")[0])
        status, payload = _post(port, body)
        assert status == 422 and payload.startswith(b'{"error": "')
        status, payload = _post(port, b'{"queries": ["abc"], "topk": 1}')
        assert status == 200 and b'\\"abc\\"' in payload
