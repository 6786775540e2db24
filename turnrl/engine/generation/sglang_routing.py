"""Which SGLang server answers a request: GRPO groups and sessions kept on one server.

Invariants:
- ``direct``: every session (episode) sticks to one server for all its turns; the sessions of one group (the
  members of a GRPO group, which share their prompt) go to the server the group's first session went to, so the
  shared prompt is prefilled once there; a group or session with no server yet goes to the server with the
  fewest requests in flight (ties in turn); a group is forgotten when its last session ends;
- ``router``: every request goes to the one sglang-router URL with the header ``X-SMG-Routing-Key`` set to the
  group key (else the session id), which its ``manual`` policy keeps on one worker (with failover);
- ``release`` undoes ``acquire`` exactly (in-flight counts never drift).
"""

from __future__ import annotations

import itertools

ROUTING_HEADER = "X-SMG-Routing-Key"


class ServerRouter:
    def __init__(self, servers: list[str], router_url: str | None = None):
        self.servers = list(servers)
        self.router_url = router_url
        self.in_flight = dict.fromkeys(self.servers, 0)
        self.sessions: dict[str, str] = {}  # session id -> server
        self._session_group: dict[str, str] = {}  # session id -> group key
        self.groups: dict[str, tuple[str, int]] = {}  # group key -> (server, sessions alive)
        self._turn = itertools.count()

    def _least_loaded(self) -> str:
        fewest = min(self.in_flight.values())
        candidates = [u for u in self.servers if self.in_flight[u] == fewest]
        return candidates[next(self._turn) % len(candidates)]

    def server_for(self, session_id: str | None, group_key: str | None = None) -> str:
        """The server that answers this session's next request (pairing it on first sight)."""
        if session_id is not None and session_id in self.sessions:
            return self.sessions[session_id]
        if group_key is not None and group_key in self.groups:
            url, alive = self.groups[group_key]
        else:
            url, alive = self._least_loaded(), 0
        if session_id is not None:
            self.sessions[session_id] = url
            if group_key is not None:
                self._session_group[session_id] = group_key
                self.groups[group_key] = (url, alive + 1)
        return url

    def target(self, session_id: str | None, group_key: str | None) -> tuple[str, dict[str, str] | None, str]:
        """(URL to post to, headers, the server that will run it) for one request."""
        if self.router_url is not None:
            key = group_key or session_id
            return self.router_url, ({ROUTING_HEADER: key} if key else None), self.router_url
        url = self.server_for(session_id, group_key)
        return url, None, url

    def acquire(self, url: str) -> None:
        if url in self.in_flight:
            self.in_flight[url] += 1

    def release(self, url: str) -> None:
        if url in self.in_flight:
            self.in_flight[url] -= 1

    def end_session(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
        group = self._session_group.pop(session_id, None)
        if group is not None and group in self.groups:
            url, alive = self.groups[group]
            if alive <= 1:
                del self.groups[group]
            else:
                self.groups[group] = (url, alive - 1)
