"""A stand-in for an SGLang server: real HTTP on loopback, request bodies checked against SGLang's own shapes.

The shapes follow SGLang's native API (``GenerateReqInput``, ``AbortReq``, ``PauseGenerationReqInput``,
``UpdateWeightFromDiskReqInput``): a field a client sends that SGLang does not define is a 400 here. Replies carry
``meta_info`` as SGLang's ``/generate`` does (``output_token_logprobs`` triples, ``finish_reason``,
``weight_version``).
"""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

import msgspec


class _Sampling(msgspec.Struct, forbid_unknown_fields=True):
    max_new_tokens: int
    temperature: float
    top_p: float
    stop_token_ids: list[int]
    skip_special_tokens: bool
    no_stop_trim: bool


class _Generate(msgspec.Struct, forbid_unknown_fields=True):
    input_ids: list[int]
    sampling_params: _Sampling
    return_logprob: bool
    rid: str
    stream: bool


class _Abort(msgspec.Struct, forbid_unknown_fields=True):
    rid: str = ""
    abort_all: bool = False


class _Pause(msgspec.Struct, forbid_unknown_fields=True):
    mode: Literal["abort", "retract", "in_place"] = "abort"


class _Continue(msgspec.Struct, forbid_unknown_fields=True):
    pass


class UpdateFromDisk(msgspec.Struct, forbid_unknown_fields=True):
    model_path: str
    weight_version: str | None = None


SCHEMAS = {
    "/generate": _Generate,
    "/abort_request": _Abort,
    "/pause_generation": _Pause,
    "/continue_generation": _Continue,
    "/update_weights_from_disk": UpdateFromDisk,
}


class FakeSGLang:
    """Answers like an SGLang server: sampled ids from a seeded RNG, stop on a stop id, abort by rid."""

    def __init__(self, vocab: int = 50):
        self.vocab = vocab
        self.calls: list[tuple[str, object]] = []
        self.weight_version = "default"
        self.hold = threading.Event()  # while cleared, rids starting with "hold" wait for an abort
        self.hold.set()
        self.aborted: set[str] = set()
        self.fail_update = False
        self.break_reply = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._reply(200, {}) if self.path == "/health" else self._reply(404, {"error": "no such path"})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                schema = SCHEMAS.get(self.path)
                if schema is None:
                    return self._reply(404, {"error": f"no such path {self.path}"})
                try:
                    body = msgspec.json.decode(raw, type=schema, strict=True)
                except msgspec.ValidationError as exc:
                    return self._reply(400, {"error": str(exc)})
                owner.calls.append((self.path, body))
                status, reply = owner.answer(self.path, body)
                self._reply(status, reply)

            def _reply(self, status, reply):
                data = json.dumps(reply).encode() if not isinstance(reply, bytes) else reply
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str, body):
        if path == "/generate":
            return self._generate(body)
        if path == "/abort_request":
            self.aborted.add(body.rid)
            self.hold.set()
            return 200, {}
        if path == "/update_weights_from_disk":
            if self.fail_update:
                return 200, {"success": False, "message": "shapes differ", "num_paused_requests": 0}
            self.weight_version = body.weight_version or self.weight_version
            return 200, {"success": True, "message": "Succeeded to update model weights.", "num_paused_requests": 0}
        return 200, {}

    def _generate(self, body: _Generate):
        if body.rid.startswith("hold"):
            self.hold.wait(10)
        rng = random.Random(hash(tuple(body.input_ids)) ^ hash(body.rid))
        sampling = body.sampling_params
        out, finish = [], {"type": "length", "length": sampling.max_new_tokens}
        if body.rid in self.aborted:
            finish = {"type": "abort", "message": "Abort in waiting queue"}
        else:
            for _ in range(sampling.max_new_tokens):
                out.append(rng.randrange(self.vocab))
                if out[-1] in sampling.stop_token_ids:
                    finish = {"type": "stop", "matched": out[-1]}
                    break
        logprobs = [[-rng.random() * 3, t, None] for t in out]
        ids = list(out)
        if self.break_reply:
            ids[0] = (ids[0] + 1) % self.vocab
        return 200, {
            "text": "",
            "output_ids": ids,
            "meta_info": {
                "id": body.rid,
                "finish_reason": finish,
                "prompt_tokens": len(body.input_ids),
                "completion_tokens": len(out),
                "cached_tokens": 0,
                "output_token_logprobs": logprobs,
                "weight_version": self.weight_version,
                "e2e_latency": 0.01,
            },
        }

    def close(self):
        self.server.shutdown()
        self.server.server_close()
