"""The web env in real headless Chromium against the bundled site: oracle, random policy, evaluators, bad
actions, crash recovery, session isolation, a changed cart. One browser pool serves the whole module.

The rules every family keeps (determinism across envs and processes, splits, bad replies, async methods, close)
are pinned in test_env_contract.py.
"""

from __future__ import annotations

import json
import random

import pytest

from turnrl.envs import get_env_spec
from turnrl.envs.web import NUM_ITEMS, WebEnv
from turnrl.envs.web.actions import WebAction, parse
from turnrl.envs.web.browser import BrowserPool, PoolExhausted
from turnrl.envs.web.evaluators import program_html, string_match, url_match
from turnrl.envs.web.oracle import play, resolve
from turnrl.envs.web.site import shared_site
from turnrl.envs.web.tasks import builtin_tasks


@pytest.fixture(scope="module")
def pool():
    pool = BrowserPool(max_contexts=4)
    yield pool
    pool.close()


@pytest.fixture
def env(pool):
    env = WebEnv(pool=pool)
    yield env
    env.close_sync()


def test_registered_with_fixed_splits():
    spec = get_env_spec("web")
    assert NUM_ITEMS >= 30
    assert sorted([*spec.splits.train, *spec.splits.test]) == list(range(NUM_ITEMS))
    assert all(t["eval"]["eval_types"][0] in ("string_match", "url_match", "program_html") for t in builtin_tasks())
    assert {t["eval"]["eval_types"][0] for t in builtin_tasks()} == {"string_match", "url_match", "program_html"}


def test_oracle_solves_the_tasks(env):
    results = [play(env, item)[0] for item in range(NUM_ITEMS)]
    assert sum(results) >= 0.95 * NUM_ITEMS, [i for i, ok in enumerate(results) if not ok]


def test_random_policy_stays_low(env):
    rng = random.Random(0)
    wins = 0
    for item in rng.sample(range(NUM_ITEMS), 10):
        env.reset_sync(item)
        for _ in range(8):
            result = env.step_sync(f"Action: {rng.choice(env.valid_actions_sync())}")
            if result.done:
                wins += result.info["success"]
                break
    assert wins <= 2


def test_stop_without_doing_the_task_scores_zero(env):
    for item, task in enumerate(builtin_tasks()):
        if task["eval"]["eval_types"] == ["program_html"]:
            env.reset_sync(item)
            result = env.step_sync("Action: stop []")
            assert result.done and result.reward == 0 and not result.info["success"]
            break


def test_string_match_cases():
    assert string_match("  The answer is 42 ", {"must_include": ["42"]}) == 1
    assert string_match("41", {"must_include": ["42"]}) == 0
    assert string_match("'Copper Kettle'", {"exact_match": "copper kettle"}) == 1
    assert string_match("copper kettle!", {"exact_match": "copper kettle"}) == 0
    assert string_match("red and blue", {"must_include": ["red", "green |OR| blue"]}) == 1
    assert string_match("red", {"must_include": ["red", "green |OR| blue"]}) == 0
    assert string_match("It opened on 2021-03-04, a Monday", {"fuzzy_match": ["2021-03-04 monday"]}) == 1
    assert string_match("2021-03-04", {"fuzzy_match": ["2021-03-04 monday"]}) == 0
    assert string_match("N/A", {"fuzzy_match": "N/A"}) == 1
    assert string_match("10", {"fuzzy_match": "N/A"}) == 0
    assert string_match("7", {"exact_match": "7", "must_include": ["8"]}) == 0
    with pytest.raises(ValueError, match="reference_answers"):
        string_match("x", {})
    with pytest.raises(ValueError, match="kind"):
        string_match("x", {"llm_judge": "x"})


def test_url_match_cases():
    assert url_match("http://h:1/shop/search?q=lamp&page=2", "http://h:1/shop/search?q=lamp") == 1
    assert url_match("http://h:1/shop/search?q=desk", "http://h:1/shop/search?q=lamp") == 0
    assert url_match("http://h:1/shop/search", "http://h:1/shop/search?q=lamp") == 0
    assert url_match("http://h:1/shop/product/3/", "http://h:1/shop/product/3") == 1
    assert url_match("http://h:1/shop/cart", "http://h:1/shop/product/3") == 0
    assert url_match("http://h:1/b", "http://h:1/a |OR| http://h:1/b") == 1
    assert url_match("http://h:1/shop/search?q=garden%20gloves", "http://h:1/shop/search?q=garden gloves") == 1
    with pytest.raises(ValueError, match="url_note"):
        url_match("http://h/a", "http://h/a", url_note="EXACT")


def test_program_html_cases():
    pages = {("u1", "loc"): "Score: 5", ("last", ""): "hello world"}
    read = lambda url, loc: pages[(url, loc)]  # noqa: E731
    assert program_html([{"url": "u1", "locator": "loc", "required_contents": {"exact_match": "score: 5"}}], read) == 1
    assert program_html([{"url": "u1", "locator": "loc", "required_contents": {"exact_match": "Score: 6"}}], read) == 0
    both = [
        {"url": "u1", "locator": "loc", "required_contents": {"must_include": ["5"]}},
        {"url": "last", "locator": "", "required_contents": {"must_include": ["world", "moon |OR| hello"]}},
    ]
    assert program_html(both, read) == 1
    both[1]["required_contents"] = {"must_include": ["moon"]}
    assert program_html(both, read) == 0


def test_action_grammar():
    assert parse("Action: click [12]") == WebAction("click", element=12)
    assert parse("I will type. ```type [3] [Garden Gloves [XL]] [0]```") == WebAction(
        "type", element=3, text="Garden Gloves [XL]", press_enter=False
    )
    assert parse("Action: type [3] [lamp]").press_enter
    assert parse("Action: scroll [DOWN]") == WebAction("scroll", text="down")
    assert parse("Action: stop [Copper Kettle]").text == "Copper Kettle"
    assert parse("Action: stop").text == ""
    assert parse("Action: go_back") == WebAction("go_back")
    assert parse("Action: press [Control+a]").text == "Control+a"
    for bad in ("Action: click [x]", "Action: click 12", "Action: jump [1]", "Action: tab_focus [1]", ""):
        with pytest.raises(ValueError, match="expected one of"):
            parse(bad)


def test_bad_actions_cost_a_turn_and_change_nothing(env):
    first = env.reset_sync(0)
    for reply, message in (
        ("Action: fly away", "could not parse"),
        ("Action: click [9999]", "no element"),
        ("Action: goto [http://example.com/]", "limited to"),
        ("Action: goto [file:///etc/passwd]", "limited to"),
    ):
        result = env.step_sync(reply)
        assert not result.info["valid"] and not result.done and result.reward == 0
        assert message in result.observation
        assert result.observation.split("\nPREVIOUS ACTION ERROR")[0] == first
    link = resolve(("type", "link", "Cart", "x", 0), env.tree, env.site_urls)  # typing into a link
    result = env.step_sync(f"Action: {link}")
    assert not result.info["valid"] and "PREVIOUS ACTION ERROR" in result.observation
    with pytest.raises(ValueError, match="item_id"):
        env.reset_sync(NUM_ITEMS)
    env.step_sync("Action: stop []")
    with pytest.raises(RuntimeError, match="reset"):
        env.step_sync("Action: go_back")


def test_first_observation_survives_a_changed_cart(env):
    item = next(i for i, t in enumerate(builtin_tasks()) if t["intent"].startswith("Add "))
    first = env.reset_sync(item)
    assert play(env, item)[0]  # changes the cart of that session
    assert env.reset_sync(item) == first
    assert "Cart" in first and "OBJECTIVE: Add" in first


def test_sessions_are_isolated(pool):
    item = next(i for i, t in enumerate(builtin_tasks()) if t["intent"].startswith("Add "))
    a, b = WebEnv(pool=pool), WebEnv(pool=pool)
    try:
        a.reset_sync(item)
        b.reset_sync(item)
        for step in builtin_tasks()[item]["oracle"][:-1]:
            a.step_sync(f"Action: {resolve(step, a.tree, a.site_urls)}")
        assert "Your cart is empty" not in a.tree
        cart = f"Action: goto [{shared_site().base_url}/shop/cart]"
        assert "Your cart is empty" in b.step_sync(cart).observation
        assert "Your cart is empty" not in a.step_sync(cart).observation
    finally:
        a.close_sync()
        b.close_sync()


def test_a_dead_context_or_browser_ends_only_its_episode(env, pool):
    bystander = WebEnv(pool=pool)
    try:
        bystander.reset_sync(1)
        env.reset_sync(0)
        pool.call(env.context.close)
        result = env.step_sync("Action: scroll [down]")
        assert result.done and result.reward == 0 and "env_error" in result.info
        assert bystander.step_sync("Action: scroll [down]").info["valid"]  # the other episode goes on
        assert play(env, 0)[0]  # a fresh context
        env.reset_sync(0)
        pool.kill_browser()
        result = env.step_sync("Action: scroll [down]")
        assert result.done and "env_error" in result.info
        assert play(env, 0)[0]  # a relaunched browser
    finally:
        bystander.close_sync()
    env.close_sync()
    assert pool.leased == 0  # every context went back, dead ones included


def test_pool_is_bounded():
    small = BrowserPool(max_contexts=1)
    try:
        a, b = WebEnv(pool=small), WebEnv(pool=small)
        a.reset_sync(0)
        with pytest.raises(PoolExhausted):
            b.reset_sync(0)
        a.close_sync()
        assert "OBJECTIVE" in b.reset_sync(0)
        b.close_sync()
    finally:
        small.close()
    with pytest.raises(ValueError, match="max_contexts"):
        BrowserPool(max_contexts=0)


def test_webarena_task_file_runs_unchanged(tmp_path, pool):
    config = {
        "sites": ["shopping"],
        "task_id": 7,
        "require_login": False,
        "storage_state": None,
        "start_url": "__SHOPPING__",
        "geolocation": None,
        "intent_template": "",
        "instantiation_dict": {},
        "intent": "Open the cart.",
        "require_reset": False,
        "eval": {
            "eval_types": ["url_match"],
            "reference_answers": None,
            "reference_url": "__SHOPPING__/cart",
            "program_html": [],
            "url_note": "GOLD in PRED",
        },
    }
    path = tmp_path / "7.json"
    path.write_text(json.dumps(config))
    env = WebEnv(tasks=str(path), site_urls=shared_site().site_urls, pool=pool)
    try:
        env.reset_sync(0)
        env.step_sync(f"Action: {resolve(('click', 'link', 'Cart'), env.tree, env.site_urls)}")
        assert env.step_sync("Action: stop []").reward == 1
    finally:
        env.close_sync()
    with pytest.raises(ValueError, match="site_urls"):
        WebEnv(tasks=str(path), pool=pool)
    config["eval"]["eval_types"] = ["llm_judge"]
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="eval_types"):
        WebEnv(tasks=str(path), site_urls={"__SHOPPING__": "http://x"}, pool=pool)
