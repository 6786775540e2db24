"""One headless Chromium per process and a bounded pool of its browser contexts, all driven from one thread.

Invariant: every Playwright call runs on the pool's own thread (``BrowserPool.call``), so the sync API never
runs on an asyncio loop and callers in any thread may use it. At most ``max_contexts`` contexts exist; a
context serves at most ``episodes_per_context`` episodes before it is closed and replaced (bounding the
renderer's memory); a context or browser found dead is dropped and a new one made on the next acquire.
Chromium is Debian's (``/usr/bin/chromium``), never a downloaded one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

from turnrl.errors import EnvError

CHROMIUM = os.environ.get("TURNRL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 720}


class PoolExhausted(EnvError):
    """Every browser context is in use (the episode ends ``env_error``)."""


class BrowserPool:
    def __init__(self, max_contexts: int = 16, episodes_per_context: int = 50, executable: str = CHROMIUM) -> None:
        if max_contexts < 1:
            raise ValueError(f"max_contexts must be >= 1, got {max_contexts}")
        if episodes_per_context < 1:
            raise ValueError(f"episodes_per_context must be >= 1, got {episodes_per_context}")
        if not os.path.exists(executable):
            raise FileNotFoundError(f"no Chromium at {executable}: run scripts/setup.sh (apt-get install chromium)")
        self.max_contexts = max_contexts
        self.episodes_per_context = episodes_per_context
        self.executable = executable
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turnrl-browser")
        self._playwright = None
        self._browser = None
        self._idle: list = []
        self._uses: dict[int, int] = {}
        self._leased = 0
        self._lock = threading.Lock()

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the browser thread and return its result (exceptions re-raised here)."""
        if threading.current_thread().name.startswith("turnrl-browser"):
            return fn(*args)
        return self._thread.submit(fn, *args).result()

    # ---- on the browser thread -----------------------------------------------------
    def _ensure_browser(self):
        if self._browser is not None and self._browser.is_connected():
            return self._browser
        if self._playwright is None:
            from playwright.sync_api import sync_playwright

            self._playwright = sync_playwright().start()
        self._idle, self._uses = [], {}
        self._browser = self._playwright.chromium.launch(
            executable_path=self.executable, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        return self._browser

    def _acquire(self):
        browser = self._ensure_browser()
        with self._lock:
            if self._leased >= self.max_contexts:
                raise PoolExhausted(f"all {self.max_contexts} browser contexts are in use")
            self._leased += 1
        try:
            return self._open_context(browser)
        except Exception:
            with self._lock:
                self._leased -= 1
            raise

    def _open_context(self, browser):
        while self._idle:
            context = self._idle.pop()
            if self._alive(context):
                context.clear_cookies()
                old = list(context.pages)
                page = context.new_page()  # a fresh page: no history from the last episode
                for stale in old:
                    stale.close()
                return context, page
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(5000)
        return context, context.new_page()

    def _alive(self, context) -> bool:
        try:
            return self._browser.is_connected() and bool(context.pages) and not context.pages[0].is_closed()
        except Exception:
            return False

    def _release(self, context, broken: bool) -> None:
        with self._lock:
            self._leased -= 1
        uses = self._uses.pop(id(context), 0) + 1
        if broken or uses >= self.episodes_per_context or not self._alive(context):
            with contextlib.suppress(Exception):
                context.close()
            return
        self._uses[id(context)] = uses
        self._idle.append(context)

    def _close(self) -> None:
        for context in self._idle:
            with contextlib.suppress(Exception):
                context.close()
        self._idle = []
        if self._browser is not None:
            with contextlib.suppress(Exception):
                self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()
        self._browser = self._playwright = None

    # ---- any thread ------------------------------------------------------------------
    def acquire(self):
        """A (context, page) pair with no cookies and one page; give it back with ``release``."""
        return self.call(self._acquire)

    def release(self, context, broken: bool = False) -> None:
        self.call(self._release, context, broken)

    def kill_browser(self) -> None:
        """Close the browser as a crash would (tests and benchmarks); the next acquire launches a new one."""
        self.call(lambda: self._browser and self._browser.close())

    @property
    def leased(self) -> int:
        return self._leased

    def close(self) -> None:
        self.call(self._close)
        self._thread.shutdown(wait=True)


_shared: BrowserPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> BrowserPool:
    """One pool per process, launched on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = BrowserPool()
        return _shared
