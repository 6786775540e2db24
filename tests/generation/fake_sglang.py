"""A stand-in for an SGLang 0.5.23 server: real HTTP on loopback, behaving as SGLang's own source reads.

What it keeps from SGLang (``entrypoints/http_server.py``, ``managers/io_struct.py``,
``managers/scheduler_components/weight_updater.py``, ``utils/weight_versions.py``):
- request bodies are checked against the fields of SGLang's request classes (a field SGLang does not define is a
  400 here); every raw body is kept in ``raw`` for the contract test against the classes themselves;
- ``/health_generate`` is 503 while the server loads (``loading_polls`` answers), then 200;
- ``/generate`` answers ``output_ids`` and ``meta_info`` (``output_token_logprobs`` triples, ``finish_reason``,
  ``weight_version`` and per-token ``weight_versions`` spans); an aborted request (by rid, ``abort_all``, a pause
  in ``abort`` mode) answers the tokens it had sampled with ``finish_reason.type == "abort"``; a rid already
  running is refused (``duplicate request ID``);
- pauses: ``abort`` aborts what runs; ``retract`` and ``in_place`` hold decoding (and new requests) until
  ``/continue_generation``; tokens sampled after an update carry the new version;
- weight updates answer HTTP 400 with ``success: false`` on failure; a cache flush after an update is refused
  while requests run (``in_place``), with the update applied and SGLang's message; ``/flush_cache`` is 400 then;
- the NCCL path: ``/init_weights_update_group`` joins a real ``torch.distributed`` group (gloo here), and
  ``/update_weights_from_distributed`` is refused outside ``/begin_weight_update`` ... ``/end_weight_update`` and
  otherwise receives a ``flattened_bucket`` broadcast into the server's tensors.
A generated token is drawn from a seeded RNG (there is no model); ``GET /fake/digest`` (not SGLang's) gives the
sha256 of every tensor the server holds, for tests that check it ends with the learner's exact weights, and
``GET /fake/raw`` every request body it was sent.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

import msgspec

FLUSH_REFUSED = (
    "Weights were updated, but the cache was not flushed because requests are still running or queued. "
    "Retract or finish them, then call /flush_cache."
)


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


class _Empty(msgspec.Struct, forbid_unknown_fields=True):
    pass


class UpdateFromDisk(msgspec.Struct, forbid_unknown_fields=True):
    model_path: str
    weight_version: str | None = None
    flush_cache: bool = True


class _InitGroup(msgspec.Struct, forbid_unknown_fields=True):
    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    group_name: str = "weight_update_group"
    backend: str = "nccl"


class _FromDistributed(msgspec.Struct, forbid_unknown_fields=True):
    names: list[str]
    dtypes: list[str]
    shapes: list[list[int]]
    group_name: str = "weight_update_group"
    flush_cache: bool = True
    weight_version: str | None = None
    load_format: str | None = None


class _Memory(msgspec.Struct, forbid_unknown_fields=True):
    tags: list[str] | None = None


SCHEMAS = {
    "/generate": _Generate,
    "/abort_request": _Abort,
    "/pause_generation": _Pause,
    "/continue_generation": _Empty,
    "/flush_cache": _Empty,
    "/update_weights_from_disk": UpdateFromDisk,
    "/init_weights_update_group": _InitGroup,
    "/begin_weight_update": _Empty,
    "/end_weight_update": _Empty,
    "/update_weights_from_distributed": _FromDistributed,
    "/release_memory_occupation": _Memory,
    "/resume_memory_occupation": _Memory,
}


class _Running:
    def __init__(self):
        self.aborted = False


class FakeSGLang:
    def __init__(self, vocab: int = 50, tensors: dict | None = None, loading_polls: int = 0):
        self.vocab = vocab
        self.calls: list[tuple[str, object]] = []
        self.raw: list[tuple[str, dict]] = []
        self.headers: list[dict[str, str]] = []
        self.weight_version = "default"
        self.version = "0.5.23"
        self.hold = threading.Event()  # while cleared, rids containing "hold" wait after hold_tokens tokens
        self.hold.set()
        self.hold_tokens = 0
        self.aborted: set[str] = set()
        self.fail_update = False
        self.break_reply = False
        self.loading_polls = loading_polls
        self.drop_next = 0  # close this many connections without a reply (a stale keep-alive connection)
        self.paused: str | None = None
        self.in_session = False
        self.released = False
        self.tensors = tensors if tensors is not None else {}
        self.group = None
        self.running: dict[str, _Running] = {}
        self.cond = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/health":
                    return self._reply(200, {})
                if self.path == "/health_generate":
                    with owner.cond:
                        loading = owner.loading_polls > 0
                        owner.loading_polls -= loading
                    return self._reply(503 if loading else 200, {})
                if self.path == "/fake/digest":
                    return self._reply(200, owner.digest())
                if self.path == "/server_info":
                    return self._reply(200, {"version": owner.version, "frontend": "python"})
                if self.path == "/fake/raw":
                    return self._reply(200, owner.raw)
                self._reply(404, {"error": "no such path"})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if owner.drop_next > 0:
                    owner.drop_next -= 1
                    self.close_connection = True
                    return
                schema = SCHEMAS.get(self.path)
                if schema is None:
                    return self._reply(404, {"error": f"no such path {self.path}"})
                try:
                    body = msgspec.json.decode(raw, type=schema, strict=True)
                except msgspec.ValidationError as exc:
                    return self._reply(400, {"error": str(exc)})
                owner.calls.append((self.path, body))
                owner.raw.append((self.path, json.loads(raw or b"{}")))
                owner.headers.append(dict(self.headers))
                status, reply = owner.answer(self.path, body)
                self._reply(status, reply)

            def _reply(self, status, reply):
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    # ---- control ---------------------------------------------------------------------------------------------------
    def answer(self, path: str, body):
        if path == "/generate":
            return self._generate(body)
        with self.cond:
            try:
                return self._control(path, body)
            finally:
                self.cond.notify_all()

    def _control(self, path: str, body):
        if path == "/abort_request":
            for rid, state in self.running.items():
                if body.abort_all or rid == body.rid:
                    state.aborted = True
            self.aborted.add(body.rid)
            return 200, {}
        if path == "/pause_generation":
            if body.mode == "abort":
                for state in self.running.values():
                    state.aborted = True
            self.paused = body.mode
            return 200, {"message": "Generation paused successfully.", "status": "ok"}
        if path == "/continue_generation":
            self.paused = None
            return 200, {"message": "Generation continued successfully.", "status": "ok"}
        if path == "/flush_cache":
            return (400, {"message": "Cache not flushed: requests are running."}) if self._busy() else (200, {})
        if path == "/update_weights_from_disk":
            if self.fail_update:
                return 400, {"success": False, "message": "shapes differ", "num_paused_requests": 0}
            status, reply = self._updated(body.weight_version, body.flush_cache)
            return status, {**reply, "num_paused_requests": 0}
        if path == "/init_weights_update_group":
            return self._join(body)
        if path == "/begin_weight_update":
            if self.in_session:
                return 400, {"success": False, "message": "a weight-update session is already open"}
            self.in_session = True
            return 200, {"success": True, "message": "Success"}
        if path == "/end_weight_update":
            if not self.in_session:
                return 400, {"success": False, "message": "no weight-update session is open"}
            self.in_session = False
            return 200, {"success": True, "message": "Success"}
        if path == "/update_weights_from_distributed":
            return self._receive(body)
        if path in ("/release_memory_occupation", "/resume_memory_occupation"):
            self.released = path.startswith("/release") or (body.tags is not None and "kv_cache" not in body.tags)
            return 200, {}
        return 404, {}

    def _updated(self, version: str | None, flush_cache: bool):
        self.weight_version = version or self.weight_version
        if flush_cache and self._busy():
            return 400, {"success": False, "message": FLUSH_REFUSED}
        return 200, {"success": True, "message": "Succeeded to update model weights."}

    def _join(self, body: _InitGroup):
        from turnrl.engine.generation.weight_broadcast import join_weight_group

        self.cond.release()  # the rendezvous blocks until the learner joins: let other calls through
        try:
            self.group = join_weight_group(
                body.master_address, body.master_port, body.rank_offset, body.world_size,
                backend="gloo", group_name=body.group_name, timeout_s=60,
            )  # fmt: skip
        except Exception as exc:
            return 400, {"success": False, "message": f"Failed to initialize custom process group: {exc}."}
        finally:
            self.cond.acquire()
        return 200, {"success": True, "message": "Succeeded to initialize custom process group."}

    def _receive(self, body: _FromDistributed):
        import torch

        from turnrl.engine.generation.weight_broadcast import broadcast, unflatten

        if not self.in_session:
            return 400, {
                "success": False,
                "message": "update_weights_from_distributed must run between begin_weight_update() and "
                "end_weight_update()",
            }
        if self.group is None or body.load_format != "flattened_bucket":
            return 400, {"success": False, "message": "no group, or not a flattened bucket"}
        itemsize = {n: torch.empty((), dtype=getattr(torch, n)).element_size() for n in set(body.dtypes)}
        nbytes = 0
        for dtype, shape in zip(body.dtypes, body.shapes, strict=True):
            if nbytes % itemsize[dtype]:
                return 400, {"success": False, "message": f"Unaligned received tensor at byte {nbytes}"}
            numel = 1
            for dim in shape:
                numel *= dim
            nbytes += numel * itemsize[dtype]
        flat = torch.empty(nbytes, dtype=torch.uint8)
        broadcast(self.group, flat)
        received = unflatten(flat, body.names, body.dtypes, body.shapes)
        unknown = [n for n in received if n not in self.tensors or self.tensors[n].shape != received[n].shape]
        if unknown:
            return 400, {"success": False, "message": f"Failed to update parameter online: {unknown[:3]}"}
        for name, tensor in received.items():
            self.tensors[name].copy_(tensor)
        if body.weight_version is not None:
            return self._updated(body.weight_version, body.flush_cache)
        return 200, {"success": True, "message": "Succeeded to update parameter online."}

    def _busy(self) -> bool:
        """Requests hold cache: running ones (not aborted), unless a ``retract`` pause put them back in the queue."""
        return self.paused != "retract" and any(not s.aborted for s in self.running.values())

    def digest(self) -> dict:
        return {
            n: hashlib.sha256(t.contiguous().reshape(-1).view(__import__("torch").uint8).numpy().tobytes()).hexdigest()
            for n, t in self.tensors.items()
        }

    # ---- generation ------------------------------------------------------------------------------------------------
    def _generate(self, body: _Generate):
        sampling = body.sampling_params
        rng = random.Random(hash(tuple(body.input_ids)) ^ hash(body.rid))
        with self.cond:
            if body.rid in self.running:
                return 400, {"error": {"message": f"duplicate request ID {body.rid}"}}
            state = self.running[body.rid] = _Running()
            if body.rid in self.aborted:
                state.aborted = True
        out, versions = [], []
        finish = {"type": "length", "length": sampling.max_new_tokens}
        try:
            for index in range(sampling.max_new_tokens):
                if not self._may_decode(state, held="hold" in body.rid and index >= self.hold_tokens):
                    finish = {"type": "abort", "message": "Abort in running batch", "status_code": 200}
                    break
                out.append(rng.randrange(self.vocab))
                versions.append(self.weight_version)
                if out[-1] in sampling.stop_token_ids:
                    finish = {"type": "stop", "matched": out[-1]}
                    break
        finally:
            with self.cond:
                self.running.pop(body.rid, None)
                self.cond.notify_all()
        logprobs = [[-rng.random() * 3, t, None] for t in out]
        ids = list(out)
        if self.break_reply and ids:
            ids[0] = (ids[0] + 1) % self.vocab
        spans = []
        for i, version in enumerate(versions):
            if spans and spans[-1]["version"] == version:
                spans[-1]["end"] = i + 1
            else:
                spans.append({"version": version, "start": i, "end": i + 1})
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
                "weight_versions": spans or [{"version": self.weight_version, "start": 0, "end": 0}],
                "e2e_latency": 0.01,
            },
        }

    def _may_decode(self, state: _Running, held: bool) -> bool:
        """Wait while paused (or held); False once the request is aborted."""
        deadline = time.monotonic() + 30  # a hang guard only
        with self.cond:
            while not state.aborted and (self.paused is not None or (held and not self.hold.is_set())):
                if time.monotonic() > deadline:
                    return False
                self.cond.wait(0.01)
            return not state.aborted

    def release_hold(self) -> None:
        with self.cond:
            self.hold.set()
            self.cond.notify_all()

    def close(self):
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()
        if getattr(self, "group", None) is not None:  # a process that hosts several fakes in turn reuses the name
            from turnrl.engine.generation.weight_broadcast import leave_weight_group

            leave_weight_group(self.group)
            self.group = None
