"""Fuzzing the four wires: bad frames, one at a time, to a real serving process; does it answer, and live on?

Wires: the generation service (ZeroMQ ROUTER, msgpack), an EnvWorker (ZeroMQ DEALER, msgpack; the bench plays the
pool's ROUTER), the AgentGym HTTP env server (JSON over HTTP), the search retriever (Search-R1's ``/retrieve``).

Invariant: each wire's process is real and started fresh; frames come from ``BadFrames`` (seeded); each frame
waits for its answer (a bounded wait; no answer is counted, never retried); after the frames the process must be
alive and answer a valid request correctly, else it counts as a crash. RSS is read from ``/proc/<pid>/status``
after a warm-up of valid requests and again after the frames.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import msgspec
import zmq
from chaos_frames import BadFrames

from turnrl.config.generation import ServiceConfig
from turnrl.engine.generation.service_client import ServiceProcess
from turnrl.envs.http.launch import free_port, running_server
from turnrl.envs.registry import env_names
from turnrl.protocol import (
    MAX_FRAME_BYTES,
    EnvCall,
    EnvReply,
    ErrorReply,
    GenerateReply,
    PauseCall,
    ServiceCallKind,
    ServiceReplyKind,
    ShutdownCall,
    WorkerMessage,
)

ANSWER_TIMEOUT_S = 30.0
SERVICE_MAX_FRAME = 256 * 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@contextlib.contextmanager
def _deep_recursion():
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # deeply nested frames are one of the kinds
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def _msgpack(value) -> bytes:
    with _deep_recursion():
        return msgspec.msgpack.encode(value)


def _json(value) -> bytes:
    with _deep_recursion():
        return json.dumps(value).encode()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fuzz(wire: str, frames: BadFrames, n: int, send, pid: int, valid, warmup: int = 20) -> dict:
    """``send(parts) -> "error" | "answer" | "none"``; ``valid() -> bool`` (a correct answer to a valid request)."""
    for _ in range(warmup):
        valid()
    before = rss_mb(pid)
    outcomes: Counter = Counter()
    kinds: Counter = Counter()
    unanswered: Counter = Counter()
    times: list[float] = []
    crashed_at = None
    start = time.perf_counter()
    for i in range(n):
        kind, parts = frames.frame()
        kinds[kind] += 1
        t0 = time.perf_counter()
        outcome = send(parts)
        times.append(time.perf_counter() - t0)
        outcomes[outcome] += 1
        if outcome == "none":
            unanswered[kind] += 1
        if outcome == "none" and not alive(pid):
            crashed_at = i
            break
    wall = time.perf_counter() - start
    is_alive = alive(pid)
    answers_valid = is_alive and valid()
    after = rss_mb(pid) if is_alive else math.nan
    return {
        "wire": wire,
        "frames": sum(kinds.values()),
        "error_replies": outcomes["error"],
        "other_replies": outcomes["answer"],
        "unanswered": outcomes["none"],
        "crashes": int(not (is_alive and answers_valid)),
        "crashed_at_frame": crashed_at,
        "alive_after": is_alive,
        "valid_request_answered_after": answers_valid,
        "answer_p50_ms": round(_percentile(times, 0.5) * 1000, 3),
        "answer_p99_ms": round(_percentile(times, 0.99) * 1000, 3),
        "answer_max_ms": round(max(times) * 1000, 3) if times else math.nan,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_ratio": round(after / before, 3) if before else math.nan,
        "wall_s": round(wall, 1),
        "kinds": dict(sorted(kinds.items())),
        "unanswered_kinds": dict(sorted(unanswered.items())),
    }


# ---- the generation service --------------------------------------------------------------------------------------
SERVICE_TEMPLATES = [
    {
        "op": "generate",
        "request_id": "fz-gen",
        "request": {
            "request_id": "fz-gen",
            "input_ids": [5, 6, 7, 8],
            "sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 2, "stop_token_ids": []},
            "session_id": None,
            "allowed": None,
        },
        "timeout_s": 10.0,
    },
    {"op": "abort", "request_id": "fz-abort", "targets": ["x"], "all": False},
    {"op": "stats", "request_id": "fz-stats"},
    {"op": "resume", "request_id": "fz-resume"},
    {"op": "update_weights", "request_id": "fz-up", "path": "/nonexistent", "tensors": None, "version": None},
    {"op": "pause", "request_id": "fz-pause", "mode": "in_place"},
    {"op": "shutdown", "request_id": "fz-down"},
]
_service_calls = msgspec.msgpack.Decoder(ServiceCallKind, strict=True)
_service_replies = msgspec.msgpack.Decoder(ServiceReplyKind, strict=True)


def _stops_service(frame: bytes) -> bool:
    """A valid pause or shutdown would stop the service serving: the fuzz run does not send those."""
    try:
        return isinstance(_service_calls.decode(frame), PauseCall | ShutdownCall)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False


def fuzz_service(model_dir: Path, workdir: Path, n: int, seed: int) -> dict:
    config = ServiceConfig(
        model_path=str(model_dir),
        address=f"ipc://{workdir}/fuzz-gen.sock",
        torch_threads=1,
        max_frame_bytes=SERVICE_MAX_FRAME,
    )
    frames = BadFrames(seed, SERVICE_TEMPLATES, _msgpack, SERVICE_MAX_FRAME, reject=_stops_service)
    with ServiceProcess(config) as service, zmq.Context.instance().socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(config.address)

        def send(parts: list[bytes]) -> str:
            sock.send_multipart(parts)
            if not sock.poll(int(ANSWER_TIMEOUT_S * 1000)):
                return "none"
            reply = _service_replies.decode(sock.recv_multipart()[-1])
            return "error" if isinstance(reply, ErrorReply) else "answer"

        def valid() -> bool:
            call = dict(SERVICE_TEMPLATES[0], request_id="fz-valid")
            call["request"] = dict(call["request"], request_id="fz-valid")
            sock.send(_msgpack(call))
            if not sock.poll(int(ANSWER_TIMEOUT_S * 1000)):
                return False
            reply = _service_replies.decode(sock.recv_multipart()[-1])
            return isinstance(reply, GenerateReply) and len(reply.result.output_ids) == 2

        return fuzz("generation service", frames, n, send, service.process.pid, valid)


# ---- an env worker -----------------------------------------------------------------------------------------------
ENV_TEMPLATES = [
    {"call_id": 1, "op": "create", "env_id": 500, "family": "no-such-family", "options": {}, "item_id": 0},
    {"call_id": 2, "op": "reset", "env_id": 0, "item_id": 3},
    {"call_id": 3, "op": "step", "env_id": 0, "action": "Action: go forward"},
    {"call_id": 4, "op": "valid_actions", "env_id": 0},
    {"call_id": 5, "op": "close", "env_id": 77},
]


def _changes_worker(frame: bytes) -> bool:
    """A valid create of a real family, or a close of env 0, would change what the worker holds: not sent."""
    try:
        call = msgspec.msgpack.decode(frame, type=EnvCall, strict=True)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return (call.op == "create" and call.family in env_names()) or (call.op == "close" and call.env_id == 0)


def fuzz_env_worker(workdir: Path, n: int, seed: int) -> dict:
    endpoint = f"ipc://{workdir}/fuzz-envw.sock"
    identity = b"fuzz.0"
    weights = {"oversized": 0.001}  # 64 MiB frames: a few of them
    frames = BadFrames(seed, ENV_TEMPLATES, _msgpack, MAX_FRAME_BYTES, weights=weights, reject=_changes_worker)
    decoder = msgspec.msgpack.Decoder(WorkerMessage, strict=True)
    with zmq.Context.instance().socket(zmq.ROUTER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        worker = subprocess.Popen(
            [sys.executable, "-m", "turnrl.envs.zmq.worker", "--endpoint", endpoint, "--identity", identity.decode()],
            stdin=subprocess.DEVNULL,
        )
        try:

            def reply(timeout_s: float = ANSWER_TIMEOUT_S) -> EnvReply | None:
                deadline = time.monotonic() + timeout_s
                while (left := deadline - time.monotonic()) > 0:
                    if not sock.poll(int(left * 1000)):
                        return None
                    message = decoder.decode(sock.recv_multipart()[-1])
                    if isinstance(message, EnvReply):
                        return message
                return None

            deadline = time.monotonic() + 120
            while not sock.poll(100):  # its first heartbeat
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError("the env worker did not start")
            sock.recv_multipart()
            sock.send_multipart([identity, _msgpack({"call_id": 0, "op": "create", "env_id": 0, "family": "babyai"})])
            if (r := reply()) is None or r.error is not None:
                raise RuntimeError(f"the env worker could not create env 0: {r}")

            def send(parts: list[bytes]) -> str:
                sock.send_multipart([identity, *parts])
                r = reply()
                return "none" if r is None else ("error" if r.error is not None else "answer")

            def valid() -> bool:
                sock.send_multipart([identity, _msgpack({"call_id": 9, "op": "reset", "env_id": 0, "item_id": 1})])
                r = reply()
                return r is not None and r.error is None and bool(r.observation)

            return fuzz("env worker", frames, n, send, worker.pid, valid)
        finally:
            worker.kill()
            worker.wait()


# ---- HTTP wires --------------------------------------------------------------------------------------------------
class HttpSender:
    """POSTs bodies to one server over a kept-alive connection; a dropped connection is reopened."""

    def __init__(self, host: str, port: int, routes: dict[str, BadFrames], seed: int):
        import random

        self.host, self.port, self.routes = host, port, routes
        self.rng = random.Random(seed)
        self.conn: http.client.HTTPConnection | None = None
        self.dropped = 0

    def post(self, path: str, body: bytes) -> tuple[int, bytes] | None:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=ANSWER_TIMEOUT_S)
            try:
                self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                response = self.conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                self.dropped += 1
                if attempt == 1:
                    return None
        return None

    def frames(self) -> BadFrames:
        """A ``BadFrames`` look-alike that picks a route per frame and remembers it."""
        sender = self

        class Routed:
            def frame(self):
                sender.path = sender.rng.choice(sorted(sender.routes))
                return sender.routes[sender.path].frame()

        return Routed()

    def send(self, parts: list[bytes]) -> str:
        answer = self.post(self.path, b"".join(parts))
        if answer is None:
            return "none"
        return "error" if answer[0] >= 400 else "answer"


def fuzz_env_server(n: int, seed: int) -> dict:
    bodies = {
        "/create": {},
        "/reset": {"id": 0, "data_idx": 3},
        "/step": {"id": 0, "action": "go forward"},
        "/close": {"id": 999},
    }

    def keeps_env_0(frame: bytes) -> bool:  # a valid close of env 0 would end the env the frames use
        with contextlib.suppress(ValueError, AttributeError, TypeError, RecursionError):
            body = json.loads(frame)
            return body.get("id") == 0 and "action" not in body and "data_idx" not in body
        return False

    with running_server("babyai", "--max-envs", "16") as (base, process):
        port = int(base.rsplit(":", 1)[1])
        routes = {
            path: BadFrames(seed + i, [body], _json, 1 << 20, reject=keeps_env_0 if path == "/close" else None)
            for i, (path, body) in enumerate(bodies.items())
        }
        sender = HttpSender("127.0.0.1", port, routes, seed)
        status, body = sender.post("/create", b"{}")
        if status != 200 or json.loads(body)["id"] != 0:
            raise RuntimeError(f"the env server did not create env 0: {status} {body[:200]!r}")

        def valid() -> bool:
            answer = sender.post("/reset", b'{"id": 0, "data_idx": 1}')
            return answer is not None and answer[0] == 200 and bool(json.loads(answer[1])["observation"])

        row = fuzz("AgentGym HTTP env server", sender.frames(), n, sender.send, process.pid, valid)
        row["connections_dropped"] = sender.dropped
        return row


def fuzz_retriever(n: int, seed: int) -> dict:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "turnrl.envs.search.server", "--port", str(port)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()  # "serving <url>" once the index is built
        if not line.startswith("serving"):
            raise RuntimeError(f"the retriever did not start: {line!r}")
        body = {"queries": ["who founded the city"], "topk": 3, "return_scores": False}
        routes = {"/retrieve": BadFrames(seed, [body], _json, 1 << 20)}
        sender = HttpSender("127.0.0.1", port, routes, seed)

        def valid() -> bool:
            answer = sender.post("/retrieve", json.dumps(body).encode())
            return answer is not None and answer[0] == 200 and len(json.loads(answer[1])["result"]) == 1

        row = fuzz("search retriever", sender.frames(), n, sender.send, process.pid, valid)
        row["connections_dropped"] = sender.dropped
        return row
    finally:
        process.kill()
        process.wait()


def fuzz_section(model_dir: Path, n: int, seed: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="turnrl-chaos-fuzz-") as tmp:
        workdir = Path(tmp)
        rows = []
        for name, run in (
            ("generation service", lambda: fuzz_service(model_dir, workdir, n, seed)),
            ("env worker", lambda: fuzz_env_worker(workdir, n, seed + 1)),
            ("AgentGym HTTP env server", lambda: fuzz_env_server(n, seed + 2)),
            ("search retriever", lambda: fuzz_retriever(n, seed + 3)),
        ):
            print(f"[chaos] fuzz: {name}, {n} frames", flush=True)
            rows.append(run())
        return rows


def fuzz_table(rows: list[dict]) -> str:
    lines = [
        "fuzzing: bad frames one at a time; crash = the process died or could not answer a valid request after",
        f"{'wire':<26}{'frames':>7}{'errors':>8}{'other':>7}{'none':>6}{'crashes':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'RSS MB before':>14}{'after':>8}",
    ]
    for r in rows:
        lines.append(
            f"{r['wire']:<26}{r['frames']:>7}{r['error_replies']:>8}{r['other_replies']:>7}{r['unanswered']:>6}"
            f"{r['crashes']:>8}{r['answer_p50_ms']:>8.2f}{r['answer_p99_ms']:>8.2f}{r['rss_before_mb']:>14.1f}"
            f"{r['rss_after_mb']:>8.1f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # a quick look at one wire: python bench/chaos_fuzz.py
    os.environ.setdefault("PYTHONHASHSEED", "0")
    print(fuzz_table([fuzz_retriever(200, 0)]))
