"""The bundled local site: a shop (``/shop``) and a forum (``/forum``) served on loopback by a stdlib server.

Invariant: the seeded data (``data.site_data``) never changes; what a visitor changes (cart, orders, new
posts, comments, votes) lives in a ``SessionState`` keyed by the ``sid`` cookie, so a browser context with
fresh cookies sees the pristine site and episodes never see each other. At most ``MAX_SESSIONS`` sessions
are kept (least recently used dropped first). Pages are plain HTML forms: no script is needed to use them.
"""

from __future__ import annotations

import html
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

from turnrl.envs.web.data import CATEGORIES, FORUMS, Comment, Post, SiteData, site_data

MAX_SESSIONS = 512
MAX_FIELD_CHARS = 2000


@dataclass
class SessionState:
    cart: dict[int, int] = field(default_factory=dict)
    orders: list[dict] = field(default_factory=list)
    new_posts: list[Post] = field(default_factory=list)
    new_comments: dict[int, list[Comment]] = field(default_factory=dict)
    votes: dict[int, int] = field(default_factory=dict)


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def page(title: str, nav: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title></head>"
        f"<body><nav>{nav}</nav><main>{body}</main></body></html>"
    )


SHOP_NAV = (
    "<a href='/shop/'>Shop home</a> | <a href='/shop/cart'>Cart</a> | <a href='/shop/orders'>My orders</a>"
    "<form action='/shop/search' method='get'><label for='q'>Search products</label>"
    "<input id='q' name='q' type='search'><button type='submit'>Search</button></form>"
)
FORUM_NAV = "<a href='/forum/'>Forum home</a> | <a href='/forum/users'>Users</a>"


class SiteState:
    """All sessions of one running site."""

    def __init__(self) -> None:
        self.data: SiteData = site_data()
        self.sessions: OrderedDict[str, SessionState] = OrderedDict()
        self.lock = threading.Lock()

    def session(self, sid: str | None) -> tuple[str, SessionState]:
        with self.lock:
            if sid is None or sid not in self.sessions:
                sid = secrets.token_hex(8)
                self.sessions[sid] = SessionState()
                while len(self.sessions) > MAX_SESSIONS:
                    self.sessions.popitem(last=False)
            self.sessions.move_to_end(sid)
            return sid, self.sessions[sid]

    # ---- shop ----------------------------------------------------------------------
    def product_list(self, products) -> str:
        rows = "".join(f"<li><a href='/shop/product/{p.id}'>{esc(p.name)}</a> {p.price}</li>" for p in products)
        return f"<ul class='products'>{rows}</ul>" if rows else "<p>No products found.</p>"

    def shop(self, parts: list[str], query: dict, form: dict, s: SessionState) -> tuple[int, str]:
        d = self.data
        if not parts:
            cats = "".join(f"<li><a href='/shop/category/{c}'>{c.title()}</a></li>" for c in CATEGORIES)
            return 200, page("Shop", SHOP_NAV, f"<h1>Welcome to the shop</h1><h2>Categories</h2><ul>{cats}</ul>")
        head = parts[0]
        if head == "category" and len(parts) == 2 and parts[1] in CATEGORIES:
            items = [p for p in d.products if p.category == parts[1]]
            body = f"<h1>{parts[1].title()}</h1><p>{len(items)} products</p>{self.product_list(items)}"
            return 200, page(parts[1].title(), SHOP_NAV, body)
        if head == "search" and len(parts) == 1:
            q = query.get("q", "").strip().lower()
            items = [p for p in d.products if q and q in p.name.lower()]
            body = f"<h1>Search results for '{esc(q)}'</h1>{self.product_list(items)}"
            return 200, page("Search", SHOP_NAV, body)
        if head == "product" and len(parts) == 2 and parts[1].isdigit() and (p := d.product(int(parts[1]))):
            body = (
                f"<h1>{esc(p.name)}</h1><p class='price'>Price: {p.price}</p>"
                f"<p class='rating'>Rating: {p.rating} out of 5 ({p.reviews} reviews)</p>"
                f"<p>Category: <a href='/shop/category/{p.category}'>{p.category.title()}</a></p>"
                f"<form method='post' action='/shop/cart/add'><input type='hidden' name='pid' value='{p.id}'>"
                "<label for='qty'>Quantity</label><input id='qty' name='qty' type='number' value='1' min='1'>"
                "<button type='submit'>Add to cart</button></form>"
            )
            return 200, page(p.name, SHOP_NAV, body)
        if head == "cart" and parts == ["cart", "add"] and form:
            pid, qty = form.get("pid", ""), form.get("qty", "1")
            if pid.isdigit() and d.product(int(pid)) and qty.isdigit() and 0 < int(qty) <= 99:
                s.cart[int(pid)] = s.cart.get(int(pid), 0) + int(qty)
                return 303, "/shop/cart"
            return 400, page("Error", SHOP_NAV, "<p>Invalid quantity.</p>")
        if head == "cart" and parts == ["cart", "remove"] and form:
            s.cart.pop(int(form.get("pid", "0") or 0), None)
            return 303, "/shop/cart"
        if parts == ["cart"]:
            rows = "".join(
                f"<tr data-product='{pid}'><td class='name'>{esc(d.product(pid).name)}</td>"
                f"<td class='qty'>{qty}</td><td><form method='post' action='/shop/cart/remove'>"
                f"<input type='hidden' name='pid' value='{pid}'><button type='submit'>Remove "
                f"{esc(d.product(pid).name)}</button></form></td></tr>"
                for pid, qty in s.cart.items()
            )
            table = (
                f"<table><tr><th>Product</th><th>Quantity</th><th></th></tr>{rows}</table>"
                "<a href='/shop/checkout'>Proceed to checkout</a>"
            )
            body = "<h1>Your cart</h1>" + (table if rows else "<p>Your cart is empty.</p>")
            return 200, page("Cart", SHOP_NAV, body)
        if parts == ["checkout"]:
            body = (
                "<h1>Checkout</h1><form method='post' action='/shop/order'>"
                "<label for='fullname'>Full name</label><input id='fullname' name='fullname' type='text'>"
                "<label for='address'>Shipping address</label><input id='address' name='address' type='text'>"
                "<button type='submit'>Place order</button></form>"
            )
            return 200, page("Checkout", SHOP_NAV, body)
        if parts == ["order"] and form:
            if not s.cart or not form.get("fullname", "").strip() or not form.get("address", "").strip():
                return 400, page("Error", SHOP_NAV, "<p>Your cart, name and address must not be empty.</p>")
            items = ", ".join(f"{qty} x {d.product(pid).name}" for pid, qty in s.cart.items())
            s.orders.append({"items": items, "name": form["fullname"].strip(), "address": form["address"].strip()})
            s.cart.clear()
            return 303, f"/shop/orders/{len(s.orders)}"
        if head == "orders" and len(parts) <= 2:
            if len(parts) == 1:
                indexed = list(enumerate(s.orders, 1))
            else:
                n = int(parts[1]) if parts[1].isdigit() else 0
                indexed = [(n, s.orders[n - 1])] if 1 <= n <= len(s.orders) else []
            rows = "".join(
                f"<li class='order'>Order #{n}: {esc(o['items'])}, ship to {esc(o['name'])}, {esc(o['address'])}</li>"
                for n, o in indexed
            )
            return 200, page("Orders", SHOP_NAV, f"<h1>My orders</h1><ul>{rows or '<li>No orders yet.</li>'}</ul>")
        return 404, page("Not found", SHOP_NAV, "<h1>Page not found</h1>")

    # ---- forum ---------------------------------------------------------------------
    def posts(self, s: SessionState) -> list[Post]:
        return list(self.data.posts) + s.new_posts

    def comments(self, post: Post, s: SessionState) -> list[Comment]:
        return list(post.comments) + s.new_comments.get(post.id, [])

    def post_rows(self, posts, s: SessionState) -> str:
        rows = "".join(
            f"<li class='post'><a href='/forum/post/{p.id}'>{esc(p.title)}</a> by "
            f"<a href='/forum/user/{p.author}'>{p.author}</a>, {p.score + s.votes.get(p.id, 0)} points, "
            f"{len(self.comments(p, s))} comments</li>"
            for p in posts
        )
        return f"<ul>{rows}</ul>" if rows else "<p>No posts yet.</p>"

    def forum(self, parts: list[str], form: dict, s: SessionState) -> tuple[int, str]:
        posts = self.posts(s)
        if not parts:
            links = "".join(f"<li><a href='/forum/f/{f}'>f/{f}</a></li>" for f in FORUMS)
            return 200, page("Forum", FORUM_NAV, f"<h1>Forums</h1><ul>{links}</ul>")
        head = parts[0]
        if head == "f" and len(parts) >= 2 and parts[1] in FORUMS:
            name = parts[1]
            if parts[2:] == ["submit"] and form:
                title, body = form.get("title", "").strip(), form.get("body", "").strip()
                if not title or not body:
                    return 400, page("Error", FORUM_NAV, "<p>Title and body must not be empty.</p>")
                s.new_posts.append(Post(len(posts) + 1, name, title, "you", body, 1))
                return 303, f"/forum/post/{len(posts) + 1}"
            if parts[2:] == ["submit"]:
                body = (
                    f"<h1>Submit a post to f/{name}</h1><form method='post' action='/forum/f/{name}/submit'>"
                    "<label for='title'>Title</label><input id='title' name='title' type='text'>"
                    "<label for='body'>Body</label><textarea id='body' name='body'></textarea>"
                    "<button type='submit'>Create post</button></form>"
                )
                return 200, page("Submit", FORUM_NAV, body)
            if len(parts) == 2:
                body = (
                    f"<h1>f/{name}</h1><a href='/forum/f/{name}/submit'>Submit a new post</a>"
                    f"{self.post_rows([p for p in posts if p.forum == name], s)}"
                )
                return 200, page(f"f/{name}", FORUM_NAV, body)
        if head == "post" and len(parts) >= 2 and parts[1].isdigit() and 1 <= int(parts[1]) <= len(posts):
            p = posts[int(parts[1]) - 1]
            if parts[2:] == ["vote"] and form:
                s.votes[p.id] = 1 if form.get("dir") == "up" else -1
                return 303, f"/forum/post/{p.id}"
            if parts[2:] == ["comment"] and form:
                text = form.get("text", "").strip()
                if not text:
                    return 400, page("Error", FORUM_NAV, "<p>A comment must not be empty.</p>")
                s.new_comments.setdefault(p.id, []).append(Comment("you", text))
                return 303, f"/forum/post/{p.id}"
            if len(parts) == 2:
                comments = "".join(
                    f"<li class='comment'><a href='/forum/user/{c.author}'>{c.author}</a>: {esc(c.text)}</li>"
                    for c in self.comments(p, s)
                )
                body = (
                    f"<h1>{esc(p.title)}</h1><p>Posted by <a href='/forum/user/{p.author}'>{p.author}</a> in "
                    f"<a href='/forum/f/{p.forum}'>f/{p.forum}</a></p>"
                    f"<p class='score'>Score: {p.score + s.votes.get(p.id, 0)}</p>"
                    f"<form method='post' action='/forum/post/{p.id}/vote'><input type='hidden' name='dir' "
                    "value='up'><button type='submit'>Upvote</button></form>"
                    f"<form method='post' action='/forum/post/{p.id}/vote'><input type='hidden' name='dir' "
                    "value='down'><button type='submit'>Downvote</button></form>"
                    f"<article class='body'>{esc(p.body)}</article>"
                    f"<h2>Comments ({len(self.comments(p, s))})</h2><ul class='comments'>{comments}</ul>"
                    f"<form method='post' action='/forum/post/{p.id}/comment'><label for='text'>Your comment"
                    "</label><textarea id='text' name='text'></textarea><button type='submit'>Post comment"
                    "</button></form>"
                )
                return 200, page(p.title, FORUM_NAV, body)
        if parts == ["users"]:
            links = "".join(f"<li><a href='/forum/user/{u.name}'>{u.name}</a></li>" for u in self.data.users)
            return 200, page("Users", FORUM_NAV, f"<h1>Users</h1><ul>{links}</ul>")
        if head == "user" and len(parts) == 2 and (u := self.data.user(parts[1])):
            own = [p for p in posts if p.author == u.name]
            body = (
                f"<h1>{u.name}</h1><p class='joined'>Joined: {u.joined}</p><p>Posts: {len(own)}</p>"
                f"{self.post_rows(own, s)}"
            )
            return 200, page(u.name, FORUM_NAV, body)
        return 404, page("Not found", FORUM_NAV, "<h1>Page not found</h1>")


def _handler(state: SiteState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self.serve({})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(min(length, 64 * 1024)).decode("utf-8", "replace")
            form = {k: v[0][:MAX_FIELD_CHARS] for k, v in parse_qs(raw, keep_blank_values=True).items()}
            self.serve(form or {"": ""})

        def serve(self, form: dict) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            cookie = self.headers.get("Cookie", "")
            sid = next((c.split("=", 1)[1] for c in cookie.split("; ") if c.startswith("sid=")), None)
            sid, session = state.session(sid)
            parts = [p for p in url.path.split("/") if p]
            if parts[:1] == ["shop"]:
                code, text = state.shop(parts[1:], query, form, session)
            elif parts[:1] == ["forum"]:
                code, text = state.forum(parts[1:], form, session)
            else:
                code, text = 200, page("Sites", "", "<a href='/shop/'>Shop</a> <a href='/forum/'>Forum</a>")
            if code == 303:
                self.send_response(303)
                self.send_header("Location", quote(text))
                body = b""
            else:
                self.send_response(code)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                body = text.encode()
            self.send_header("Set-Cookie", f"sid={sid}; Path=/; HttpOnly")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # browsers drop idle keep-alive sockets
        pass


class LocalSite:
    """The shop and forum on ``127.0.0.1:<port>`` (port 0: any free port), served from a daemon thread."""

    def __init__(self, port: int = 0) -> None:
        self.state = SiteState()
        self.server = _QuietServer(("127.0.0.1", port), _handler(self.state))
        self.thread = threading.Thread(target=self.server.serve_forever, name="turnrl-web-site", daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def site_urls(self) -> dict[str, str]:
        """WebArena's placeholders mapped to this site's parts."""
        return {"__SHOPPING__": f"{self.base_url}/shop", "__REDDIT__": f"{self.base_url}/forum"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_shared: LocalSite | None = None
_shared_lock = threading.Lock()


def shared_site() -> LocalSite:
    """One site per process, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LocalSite()
        return _shared
