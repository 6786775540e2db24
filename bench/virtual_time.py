"""An asyncio event loop on a virtual clock: modelled waits cost no wall time and no machine load can stretch them.

Invariants:
- ``loop.time()`` is virtual; it moves only when nothing can run: no callback ready, no I/O ready, and no thread
  of the loop's executor at work. Then it jumps to the next timer, so every ``asyncio.sleep``, ``call_later`` and
  timeout fires at exactly its virtual time, however long the Python in between took for real;
- real work (callbacks, threads of ``run_in_executor`` / ``asyncio.to_thread``) takes zero virtual time: while a
  thread works, the loop waits for it in real time with the clock stopped;
- ``sleep_in_thread(seconds)``, called from an executor thread, blocks that thread for ``seconds`` of virtual time
  (a modelled computation off the loop, such as a learner's update); the thread counts as idle meanwhile.
"""

from __future__ import annotations

import asyncio
import selectors
import threading


class _VirtualSelector(selectors.BaseSelector):
    def __init__(self, loop: VirtualClockLoop):
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj, events, data=None):
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj):
        return self._real.unregister(fileobj)

    def modify(self, fileobj, events, data=None):
        return self._real.modify(fileobj, events, data)

    def get_key(self, fileobj):
        return self._real.get_key(fileobj)

    def get_map(self):
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout=None):
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None or self._loop.threads_at_work():
            return self._real.select(None)  # a thread's result (or I/O) is the next thing that can happen
        self._loop.advance(timeout)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self):
        self._virtual_now = 0.0
        self._at_work = 0
        self._lock = threading.Lock()
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += max(seconds, 0.0)

    def threads_at_work(self) -> bool:
        with self._lock:
            return self._at_work > 0

    def _count(self, delta: int) -> None:
        with self._lock:
            self._at_work += delta

    def run_in_executor(self, executor, func, *args):
        def counted(*inner):
            try:
                return func(*inner)
            finally:
                self._count(-1)  # before the result is posted to the loop

        self._count(+1)
        return super().run_in_executor(executor, counted, *args)

    def sleep_in_thread(self, seconds: float) -> None:
        """From an executor thread: block for ``seconds`` of virtual time."""
        woken = threading.Event()

        def wake() -> None:
            self._count(+1)  # at work again from this virtual moment, before the loop can move on
            woken.set()

        self._count(-1)
        self.call_soon_threadsafe(self.call_later, seconds, wake)
        woken.wait()
