"""A ``FakeSGLang`` in a process of its own, holding tensors named and shaped like a model's (all zeros at start).

The weight-update group then spans real processes, as between a learner and its servers: the learner broadcasts,
this process receives (``torch.distributed``, gloo on CPU; the protocol and bucketing are NCCL's path).
"""

from __future__ import annotations

import multiprocessing as mp


def _serve(specs: dict, conn, stop) -> None:
    import torch

    from tests.generation.fake_sglang import FakeSGLang

    torch.set_num_threads(1)
    tensors = {name: torch.zeros(shape, dtype=getattr(torch, dtype)) for name, (dtype, shape) in specs.items()}
    server = FakeSGLang(tensors=tensors)
    conn.send(server.url)
    stop.wait()
    server.close()


class FakeSGLangProcess:
    def __init__(self, state_dict: dict):
        self.specs = {n: (str(t.dtype).removeprefix("torch."), list(t.shape)) for n, t in state_dict.items()}
        self.url: str | None = None

    def __enter__(self) -> FakeSGLangProcess:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._stop = ctx.Event()
        self.process = ctx.Process(target=_serve, args=(self.specs, child, self._stop), daemon=True)
        self.process.start()
        if not parent.poll(120):  # a hang guard only
            self.process.kill()
            raise RuntimeError("the fake SGLang process did not start")
        self.url = parent.recv()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
