"""Seeded data of the bundled site: a shop (products in categories) and a forum (users, posts, comments).

Invariant: everything here is a pure function of the fixed seed below, so the pages, the tasks and their
gold answers are identical in any process. Nothing here changes at run time (per-session changes live in
``site.SessionState``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cache

SEED = 8

CATEGORIES = {
    "kitchen": [
        "Copper Kettle",
        "Bamboo Cutting Board",
        "Ceramic Teapot",
        "Chef Knife",
        "Spice Rack",
        "Cast Iron Skillet",
        "Glass Storage Jars",
    ],
    "office": ["Desk Lamp", "Walnut Pen Holder", "Ergonomic Chair", "Paper Shredder", "Whiteboard Markers"],
    "garden": ["Watering Can", "Pruning Shears", "Hose Reel", "Terracotta Planter", "Bird Feeder", "Garden Gloves"],
    "electronics": ["Bluetooth Speaker", "USB Charger", "Noise Cancelling Headphones", "Smart Plug"],
}

FORUMS = ["books", "cooking", "gardening", "technology"]
USERS = [
    "alice_reads",
    "bob_builds",
    "carol_cooks",
    "dave_digs",
    "erin_codes",
    "frank_fixes",
    "gina_grows",
    "hank_hikes",
]
TOPICS = {
    "books": [
        "Best mystery novels of the decade",
        "Reading slumps and how to beat them",
        "Audiobooks versus paper",
        "A review of The Silent Harbor",
    ],
    "cooking": [
        "Sourdough starter troubleshooting",
        "Quick weeknight curries",
        "Cast iron care myths",
        "Favourite soup for winter",
    ],
    "gardening": [
        "Tomatoes splitting after rain",
        "Composting in small spaces",
        "Shade tolerant herbs",
        "When to prune roses",
    ],
    "technology": [
        "Mechanical keyboards worth it",
        "Home server on a budget",
        "Learning Rust in a month",
        "Old laptops with new life",
    ],
}
COMMENT_LINES = [
    "Great point, thanks for sharing.",
    "I had the same experience last year.",
    "Could you post a photo?",
    "This changed how I think about it.",
    "I disagree, respectfully.",
    "Bookmarking this for later.",
    "Any sources for that?",
    "Worked for me too.",
]


@dataclass(frozen=True)
class Product:
    id: int
    name: str
    category: str
    price_cents: int
    rating: float
    reviews: int

    @property
    def price(self) -> str:
        return f"${self.price_cents // 100}.{self.price_cents % 100:02d}"


@dataclass(frozen=True)
class Comment:
    author: str
    text: str


@dataclass(frozen=True)
class Post:
    id: int
    forum: str
    title: str
    author: str
    body: str
    score: int
    comments: tuple[Comment, ...] = field(default=())


@dataclass(frozen=True)
class User:
    name: str
    joined: str


@dataclass(frozen=True)
class SiteData:
    products: tuple[Product, ...]
    users: tuple[User, ...]
    posts: tuple[Post, ...]

    def product(self, product_id: int) -> Product | None:
        return self.products[product_id - 1] if 1 <= product_id <= len(self.products) else None

    def post(self, post_id: int) -> Post | None:
        return self.posts[post_id - 1] if 1 <= post_id <= len(self.posts) else None

    def user(self, name: str) -> User | None:
        return next((u for u in self.users if u.name == name), None)


@cache
def site_data() -> SiteData:
    rng = random.Random(SEED)
    products, ratings = [], set()
    for category, names in CATEGORIES.items():
        for name in names:
            rating = round(rng.uniform(2.5, 5.0), 1)
            while rating in ratings:  # distinct ratings: "the highest rated" has one answer
                rating = round(rng.uniform(2.5, 5.0), 1)
            ratings.add(rating)
            products.append(
                Product(
                    len(products) + 1, name, category, rng.randrange(499, 15000, 10) + 9, rating, rng.randrange(3, 400)
                )
            )
    users = tuple(
        User(name, f"20{rng.randrange(15, 24)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}") for name in USERS
    )
    posts = []
    for forum in FORUMS:
        for title in TOPICS[forum]:
            author = rng.choice(USERS)
            comments = tuple(Comment(rng.choice(USERS), rng.choice(COMMENT_LINES)) for _ in range(rng.randrange(0, 6)))
            body = f"{title}. I have been thinking about this for a while and would like to hear your views."
            posts.append(Post(len(posts) + 1, forum, title, author, body, rng.randrange(-3, 60), comments))
    return SiteData(tuple(products), users, tuple(posts))
