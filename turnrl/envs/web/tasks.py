"""Web tasks in WebArena's JSON config format, and the bundled site's 38 tasks built from its seeded data.

Invariant: a task is a plain WebArena config dict (``task_id``, ``start_url``, ``intent``, ``eval`` with
``eval_types`` among ``string_match``/``url_match``/``program_html``); site URLs appear only as WebArena's
placeholders (``__SHOPPING__``, ``__REDDIT__``, ...) until ``fill_urls`` substitutes them, so a real WebArena
task file runs unchanged given its sites' URLs. Our tasks add one key WebArena ignores, ``oracle``: a script
of steps naming elements by role and name (``oracle.py`` resolves them against the live page).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from turnrl.envs.web.data import site_data

EVAL_TYPES = ("string_match", "url_match", "program_html")


def fill_urls(value, site_urls: dict[str, str]):
    """``value`` (a config or any part of one) with every placeholder replaced by its URL."""
    if isinstance(value, str):
        for placeholder, url in site_urls.items():
            value = value.replace(placeholder, url.rstrip("/"))
        return value
    if isinstance(value, list):
        return [fill_urls(v, site_urls) for v in value]
    if isinstance(value, dict):
        return {k: fill_urls(v, site_urls) for k, v in value.items()}
    return value


def validate_task(task: dict) -> dict:
    """``task`` if it is a usable config; ``ValueError`` naming what is missing otherwise."""
    for key in ("task_id", "start_url", "intent", "eval"):
        if key not in task:
            raise ValueError(f"task config lacks {key!r}: {str(task)[:120]}")
    types = task["eval"].get("eval_types")
    if not types or any(t not in EVAL_TYPES for t in types):
        raise ValueError(
            f"task {task['task_id']}: eval_types must be a non-empty subset of {EVAL_TYPES}, got {types!r}"
        )
    return task


def load_tasks(path: str | Path) -> list[dict]:
    """Task configs from a JSON file holding one config or a list of them (WebArena's ``config_files`` are
    one per file; its ``test.raw.json`` is a list)."""
    data = json.loads(Path(path).read_text())
    return [validate_task(t) for t in (data if isinstance(data, list) else [data])]


def _task(intent: str, start: str, eval_: dict, oracle: list) -> dict:
    site = "shopping" if start.startswith("__SHOPPING__") else "reddit"
    return {
        "sites": [site],
        "start_url": start,
        "intent": intent,
        "require_login": False,
        "eval": {"reference_answers": None, "reference_url": None, "program_html": [], **eval_},
        "oracle": oracle,
    }


def _string(answers: dict) -> dict:
    return {"eval_types": ["string_match"], "reference_answers": answers}


def _url(url: str) -> dict:
    return {"eval_types": ["url_match"], "reference_url": url, "url_note": "GOLD in PRED"}


def _program(*checks: tuple[str, str, dict]) -> dict:
    return {
        "eval_types": ["program_html"],
        "program_html": [{"url": u, "locator": loc, "required_contents": req} for u, loc, req in checks],
    }


@cache
def builtin_tasks() -> tuple[dict, ...]:
    """The bundled site's tasks: shop and forum, information seeking, navigation and state changes."""
    d = site_data()
    shop, forum = "__SHOPPING__", "__REDDIT__"
    p = d.products
    tasks: list[dict] = []

    def via_category(product) -> list:
        return [("click", "link", product.category.title()), ("click", "link", product.name)]

    def via_search(product, word: str) -> list:
        return [("type", "searchbox", "Search products", word, 1), ("click", "link", product.name)]

    for product in (p[0], p[9]):
        tasks.append(
            _task(
                f"What is the price of the {product.name}?",
                f"{shop}/",
                _string({"must_include": [product.price]}),
                [*via_category(product), ("stop", product.price)],
            )
        )
    for product in (p[4], p[20]):
        tasks.append(
            _task(
                f"How many reviews does the {product.name} have?",
                f"{shop}/",
                _string({"exact_match": str(product.reviews)}),
                [*via_search(product, product.name.split()[-1]), ("stop", str(product.reviews))],
            )
        )
    for category in ("garden", "electronics"):
        count = sum(x.category == category for x in p)
        tasks.append(
            _task(
                f"How many products are listed in the {category} category?",
                f"{shop}/",
                _string({"exact_match": str(count)}),
                [("click", "link", category.title()), ("stop", str(count))],
            )
        )
    for category in ("kitchen", "office"):
        best = max((x for x in p if x.category == category), key=lambda x: x.rating)
        oracle = [("click", "link", category.title())]
        for x in p:
            if x.category == category:
                oracle += [("click", "link", x.name), ("go_back",)]
        tasks.append(
            _task(
                f"Which product in the {category} category has the highest rating?",
                f"{shop}/",
                _string({"must_include": [best.name]}),
                [*oracle, ("stop", best.name)],
            )
        )
    for word in ("lamp", "garden"):
        tasks.append(
            _task(
                f"Show me the search results for '{word}'.",
                f"{shop}/",
                _url(f"{shop}/search?q={word}"),
                [("type", "searchbox", "Search products", word, 1), ("stop", "")],
            )
        )
    for product in (p[2], p[17]):
        tasks.append(
            _task(
                f"Open the product page of the {product.name}.",
                f"{shop}/",
                _url(f"{shop}/product/{product.id}"),
                [*via_category(product), ("stop", "")],
            )
        )
    for category in ("office", "kitchen"):
        tasks.append(
            _task(
                f"Go to the {category} category page.",
                f"{shop}/",
                _url(f"{shop}/category/{category}"),
                [("click", "link", category.title()), ("stop", "")],
            )
        )
    for product, qty in ((p[6], 2), (p[21], 3)):
        tasks.append(
            _task(
                f"Add {qty} of the {product.name} to my cart.",
                f"{shop}/",
                _program(
                    (
                        f"{shop}/cart",
                        f"document.querySelector('[data-product=\"{product.id}\"] .qty').outerText",
                        {"exact_match": str(qty)},
                    )
                ),
                [
                    *via_category(product),
                    ("type", "spinbutton", "Quantity", str(qty), 0),
                    ("click", "button", "Add to cart"),
                    ("stop", ""),
                ],
            )
        )
    for product, name, address in (
        (p[11], "Ada Byron", "12 Mill Lane, Leeds"),
        (p[15], "Sam Okafor", "4 Harbour Road, Cork"),
    ):
        tasks.append(
            _task(
                f"Buy one {product.name} and ship it to {name}, {address}.",
                f"{shop}/",
                _program(
                    (
                        f"{shop}/orders",
                        "document.querySelector('.order').outerText",
                        {"must_include": [product.name, name, address]},
                    )
                ),
                [
                    *via_category(product),
                    ("click", "button", "Add to cart"),
                    ("click", "link", "Proceed to checkout"),
                    ("type", "textbox", "Full name", name, 0),
                    ("type", "textbox", "Shipping address", address, 0),
                    ("click", "button", "Place order"),
                    ("stop", ""),
                ],
            )
        )

    posts, users = d.posts, d.users

    def via_forum(post) -> list:
        return [("click", "link", f"f/{post.forum}"), ("click", "link", post.title)]

    for post in (posts[1], posts[10]):
        tasks.append(
            _task(
                f"Who wrote the forum post titled '{post.title}'?",
                f"{forum}/",
                _string({"must_include": [post.author]}),
                [*via_forum(post), ("stop", post.author)],
            )
        )
    for post in (posts[5], posts[14]):
        n = len(post.comments)
        tasks.append(
            _task(
                f"How many comments does the forum post '{post.title}' have?",
                f"{forum}/",
                _string({"exact_match": str(n)}),
                [*via_forum(post), ("stop", str(n))],
            )
        )
    for user in (users[2], users[6]):
        tasks.append(
            _task(
                f"When did the forum user {user.name} join? Answer with the date (YYYY-MM-DD).",
                f"{forum}/",
                _string({"must_include": [user.joined]}),
                [("click", "link", "Users"), ("click", "link", user.name), ("stop", user.joined)],
            )
        )
    for post in (posts[3], posts[12]):
        tasks.append(
            _task(
                f"What is the score of the forum post '{post.title}'?",
                f"{forum}/",
                _string({"exact_match": str(post.score)}),
                [*via_forum(post), ("stop", str(post.score))],
            )
        )
    for user in (users[1], users[4]):
        tasks.append(
            _task(
                f"Open the profile page of the forum user {user.name}.",
                f"{forum}/",
                _url(f"{forum}/user/{user.name}"),
                [("click", "link", "Users"), ("click", "link", user.name), ("stop", "")],
            )
        )
    for name in ("cooking", "technology"):
        tasks.append(
            _task(
                f"Go to the f/{name} forum.",
                f"{forum}/",
                _url(f"{forum}/f/{name}"),
                [("click", "link", f"f/{name}"), ("stop", "")],
            )
        )
    for post in (posts[7], posts[9]):
        tasks.append(
            _task(
                f"Open the forum post '{post.title}'.",
                f"{forum}/",
                _url(f"{forum}/post/{post.id}"),
                [*via_forum(post), ("stop", "")],
            )
        )
    for post, text in ((posts[0], "Thanks, this list is excellent."), (posts[13], "Try a smaller pot first.")):
        tasks.append(
            _task(
                f"Reply to the forum post '{post.title}' with the comment \"{text}\".",
                f"{forum}/",
                _program(
                    (
                        f"{forum}/post/{post.id}",
                        "document.querySelector('.comments').outerText",
                        {"must_include": [text]},
                    )
                ),
                [
                    *via_forum(post),
                    ("type", "textbox", "Your comment", text, 0),
                    ("click", "button", "Post comment"),
                    ("stop", ""),
                ],
            )
        )
    for post in (posts[2], posts[11]):
        tasks.append(
            _task(
                f"Upvote the forum post '{post.title}'.",
                f"{forum}/",
                _program(
                    (
                        f"{forum}/post/{post.id}",
                        "document.querySelector('.score').outerText",
                        {"exact_match": f"Score: {post.score + 1}"},
                    )
                ),
                [*via_forum(post), ("click", "button", "Upvote"), ("stop", "")],
            )
        )
    for name, title, body in (
        ("books", "Poetry for beginners", "Which collection should I start with?"),
        ("gardening", "Slugs on my lettuce", "What keeps them away without chemicals?"),
    ):
        tasks.append(
            _task(
                f"Create a post in f/{name} titled '{title}' with the body '{body}'.",
                f"{forum}/",
                _program(
                    (f"{forum}/f/{name}", "document.querySelector('main').outerText", {"must_include": [title]}),
                    ("last", "document.querySelector('.body').outerText", {"exact_match": body}),
                ),
                [
                    ("click", "link", f"f/{name}"),
                    ("click", "link", "Submit a new post"),
                    ("type", "textbox", "Title", title, 0),
                    ("type", "textbox", "Body", body, 0),
                    ("click", "button", "Create post"),
                    ("stop", ""),
                ],
            )
        )
    return tuple({"task_id": i, **t} for i, t in enumerate(tasks))
