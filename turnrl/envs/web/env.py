"""The web env: one WebArena-style task per episode, in a real headless Chromium page.

Invariant: the observation is the objective, the URL and the page's accessibility tree (plus the last
action's error, if any); a bad action (unparsable, unknown id, not actionable, off-site URL) changes nothing,
says why, and costs the turn (``valid = False``). ``stop [answer]`` ends the episode and scores it with the
task's evaluators (reward = score, 0 or 1). A page, context or browser that dies mid-episode ends only this
episode (``info["env_error"]``, reward 0); its context is dropped and the next reset gets a fresh one. Each
episode starts with no cookies, hence a fresh site session. All browser work runs on the pool's thread; the
async methods wait for it in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

from turnrl.envs.base import BlockingEnv
from turnrl.envs.web.actions import GRAMMAR, WebAction, parse
from turnrl.envs.web.browser import BrowserPool, shared_pool
from turnrl.envs.web.evaluators import program_html, string_match, url_match
from turnrl.envs.web.observation import MAX_LINES, read_tree, render
from turnrl.envs.web.site import shared_site
from turnrl.envs.web.tasks import builtin_tasks, fill_urls, load_tasks, validate_task
from turnrl.protocol import EnvResult

SYSTEM_PROMPT = (
    "You are a web agent. Each turn you see the objective, the page URL and the page's accessibility tree, "
    "where [N] is an element id. Reply with one action as: Action: <action>. Actions: " + GRAMMAR + ". "
    "Use stop [answer] when done, with the answer if the objective asks a question (else stop [])."
)
ELEMENT_LINE = re.compile(r"^\s*\[(\d+)\] (\S+) ", re.M)
TYPABLE = ("textbox", "searchbox", "spinbutton")
CLICKABLE = ("link", "button", "checkbox", "radio", "combobox")
RANDOM_WORDS = ("lamp", "test", "hello", "2")


class ActionError(Exception):
    pass


class WebEnv(BlockingEnv):
    family = "web"
    system_prompt = SYSTEM_PROMPT

    def __init__(
        self,
        tasks: str | list[dict] | None = None,
        site_urls: dict[str, str] | None = None,
        pool: BrowserPool | None = None,
        max_tree_lines: int = MAX_LINES,
    ) -> None:
        if tasks is None:
            self.tasks = list(builtin_tasks())
            site_urls = {**shared_site().site_urls, **(site_urls or {})}
        else:
            self.tasks = load_tasks(tasks) if isinstance(tasks, str) else [validate_task(t) for t in tasks]
            if not site_urls:
                raise ValueError("site_urls is required with external tasks (e.g. {'__SHOPPING__': 'http://...'})")
        self.site_urls = dict(site_urls)
        self.allowed_hosts = {urlsplit(u).netloc for u in self.site_urls.values()}
        self.pool = pool or shared_pool()
        self.max_tree_lines = max_tree_lines
        self.task: dict = {}
        self.tree = ""
        self.context = self.page = None
        self._done = True

    @property
    def num_items(self) -> int:
        return len(self.tasks)

    # ---- async: off the event loop ----------------------------------------------------
    async def reset(self, item_id: int) -> str:
        return await asyncio.to_thread(self.reset_sync, item_id)

    async def step(self, action_text: str) -> EnvResult:
        return await asyncio.to_thread(self.step_sync, action_text)

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    # ---- sync ----------------------------------------------------------------------------
    def reset_sync(self, item_id: int) -> str:
        if not 0 <= item_id < self.num_items:
            raise ValueError(f"item_id must be in [0, {self.num_items}), got {item_id}")
        return self.pool.call(self._reset, int(item_id))

    def step_sync(self, action_text: str) -> EnvResult:
        if self._done:
            raise RuntimeError("step() after the episode ended; call reset() first")
        return self.pool.call(self._step, action_text)

    def close_sync(self) -> None:
        if self.context is not None:
            self.pool.release(self.context)
            self.context = self.page = None
        self._done = True

    def valid_actions_sync(self) -> list[str]:
        """Clicks on links and buttons, typing into text fields, scrolling, going back, and stopping."""
        actions = []
        for element, role in ELEMENT_LINE.findall(self.tree):
            if role in CLICKABLE:
                actions.append(f"click [{element}]")
            elif role in TYPABLE:
                actions += [f"type [{element}] [{word}] [1]" for word in RANDOM_WORDS]
        return [*actions, "scroll [down]", "scroll [up]", "go_back", "stop []"]

    # ---- on the browser thread ---------------------------------------------------------
    def _reset(self, item_id: int) -> str:
        if self.context is not None:
            self.pool.release(self.context)
            self.context = self.page = None
        self.task = fill_urls(self.tasks[item_id], self.site_urls)
        self.context, self.page = self.pool.acquire()
        try:
            self.page.goto(self.task["start_url"].split(" |AND| ")[0])
            self._done = False
            return self._observe()
        except Exception:
            self.pool.release(self.context, broken=True)
            self.context = self.page = None
            raise

    def _observe(self, error: str | None = None) -> str:
        self.tree = read_tree(self.page, self.max_tree_lines)
        return render(self.task["intent"], self.page.url, self.tree, error)

    def _step(self, reply: str) -> EnvResult:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            action = parse(reply)
            if action.kind == "stop":
                self._done = True
                score = self._evaluate(action.text)
                return self._result(f"Stopped with the answer {action.text!r}.", score, True)
            self._perform(action)
            return self._result(self._observe(), 0.0, True)
        except (ValueError, ActionError) as error:
            return self._invalid(str(error))
        except PlaywrightTimeout:
            return self._invalid("the action timed out: the element may be hidden or disabled")
        except PlaywrightError as error:
            if self._page_alive():
                return self._invalid(str(error).splitlines()[0])
            return self._crashed(error)

    def _page_alive(self) -> bool:
        try:
            return self.page is not None and not self.page.is_closed() and self.context.browser.is_connected()
        except Exception:
            return False

    def _crashed(self, error: Exception) -> EnvResult:
        self.pool.release(self.context, broken=True)
        self.context = self.page = None
        self._done = True
        message = str(error).splitlines()[0]
        return EnvResult(
            observation=f"The browser failed: {message}",
            reward=0.0,
            done=True,
            info={
                "success": False,
                "score": 0.0,
                "valid": False,
                "env_error": message,
                "task_id": self.task.get("task_id", -1),
            },
        )

    def _invalid(self, message: str) -> EnvResult:
        return self._result(self._observe(error=message), 0.0, False)

    def _result(self, observation: str, score: float, valid: bool) -> EnvResult:
        info = {"success": score >= 1.0, "score": score, "valid": valid, "task_id": self.task.get("task_id", -1)}
        return EnvResult(observation=observation, reward=score, done=self._done, info=info)

    def _element(self, element: int):
        locator = self.page.locator(f'[data-tid="{element}"]')
        if locator.count() == 0:
            raise ActionError(f"there is no element with id [{element}] on this page")
        return locator.first

    def _perform(self, action: WebAction) -> None:
        page = self.page
        if action.kind == "click":
            self._element(action.element).click(timeout=3000)
        elif action.kind == "hover":
            self._element(action.element).hover(timeout=3000)
        elif action.kind == "type":
            target = self._element(action.element)
            target.fill(action.text, timeout=3000)
            if action.press_enter:
                target.press("Enter")
        elif action.kind == "press":
            page.keyboard.press(action.text)
        elif action.kind == "scroll":
            page.mouse.wheel(0, (1 if action.text == "down" else -1) * page.viewport_size["height"])
        elif action.kind == "goto":
            url = urlsplit(action.text)
            if url.scheme not in ("http", "https") or url.netloc not in self.allowed_hosts:
                raise ActionError(f"goto is limited to the task's sites ({', '.join(sorted(self.allowed_hosts))})")
            page.goto(action.text)
        elif action.kind == "go_back":
            page.go_back()
        elif action.kind == "go_forward":
            page.go_forward()
        page.wait_for_load_state()

    def _evaluate(self, answer: str) -> float:
        spec = self.task["eval"]
        score = 1.0
        for kind in spec["eval_types"]:
            if kind == "string_match":
                score *= string_match(answer, spec["reference_answers"])
            elif kind == "url_match":
                score *= url_match(self.page.url, spec["reference_url"], spec.get("url_note", "GOLD in PRED"))
            else:
                score *= program_html(spec["program_html"], self._read)
        return score

    def _read(self, url: str, locator: str) -> str:
        """The text ``locator`` gives on ``url`` (``last``: the agent's page), read in this episode's context."""
        if url.startswith("func:") or locator.startswith("func:"):
            raise ValueError(f"program_html 'func:' expressions are not supported ({url or locator!r})")
        page = self.page if url == "last" else self.context.new_page()
        try:
            if page is not self.page:
                page.goto(url)
            expression = locator or "document.body.outerText"
            script = f"() => {{ try {{ return String(({expression}) ?? ''); }} catch (e) {{ return ''; }} }}"
            return page.evaluate(script)
        finally:
            if page is not self.page:
                page.close()
