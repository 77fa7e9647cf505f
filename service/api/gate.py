"""The request gate, in front of routing: authentication and scope, and encoded slashes.

It runs before FastAPI reads a body, so a caller without a valid key learns nothing from the
body's validation errors (401 comes first, even for malformed JSON), and it costs no per-route
dependency. The scope a request needs follows from its method and path:

* ``read``: every GET;
* ``fire``: ``POST /sessions/{uid}/fire``;
* ``configure``: ``PATCH``/``PUT /sessions/{uid}/config`` and ``DELETE /sessions/{uid}``;
* ``operate``: every other change under ``/sessions/{uid}/instances/``;
* ``metrics``: ``GET /metrics`` (Prometheus' key needs nothing else).

``GET /sessions`` (the index) and ``GET /auth/key`` need ``read``; the key is left in the
request's state (``api_key``) for them, and its name in ``engine.actor.ACTOR`` for the event log.

Encoded slashes: Starlette routes on the decoded path, so ``/sessions/app%2F1/fire`` would not
match any route (a bare 404). The gate decodes each segment on its own and stands in U+E000
for a slash inside a segment: a UID holding one fails its pattern (422 naming ``path.uid``) and
an instance name gets its slash back (``params.instance_name``).
"""

from __future__ import annotations

from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.auth import Authenticator
from service.api.auth import Scope as AuthScope
from service.api.problems import ProblemError, problem_response
from service.engine.actor import ACTOR

SLASH_STAND_IN = "\ue000"


WHOAMI_PATH = "/auth/key"
GATED_PATHS = frozenset({"/sessions", WHOAMI_PATH})
"""Paths outside /sessions/{uid} that need a key too (their handlers read it from the state)."""


def required_scope(method: str, segments: list[str]) -> AuthScope:
    """The scope a request to /sessions/... needs (segments after "sessions")."""
    if method in ("GET", "HEAD"):
        return "read"
    tail = segments[1:]
    if tail == ["fire"]:
        return "fire"
    if tail == ["config"] or not tail:
        return "configure"
    return "operate"


def decode_segments(raw_path: bytes) -> list[str]:
    return [
        unquote(part.decode("latin-1")).replace("/", SLASH_STAND_IN)
        for part in raw_path.split(b"/")
    ]


class Gate:
    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if path == "/metrics":
            await self.guard(scope, receive, send, "metrics", None)
            return
        if path not in GATED_PATHS and not path.startswith("/sessions/"):
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        segments = decode_segments(raw.split(b"?", 1)[0])
        if b"%2f" in raw.lower():
            scope = dict(scope, path="/".join(segments))
        # ["", "sessions", uid, ...]; the gated paths name no session
        session_part = [] if path in GATED_PATHS else segments[2:]
        needed = required_scope(scope["method"], session_part)
        await self.guard(scope, receive, send, needed, session_part[0] if session_part else None)

    async def guard(
        self, scope: Scope, receive: Receive, send: Send, needed: AuthScope, uid: str | None
    ) -> None:
        """Pass the request on if its key has the scope (and the UID), else answer 401/403.
        The key is left in the request's state and its name in ACTOR (the event log's actor)."""
        if not self.auth.enabled:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization")
        if header is None and scope["path"] == WHOAMI_PATH:
            # the inspector asks who it is before it has a key: no 401 (nor a console
            # error) for that; the answer says a key is needed and carries no data
            await self.app(scope, receive, send)
            return
        try:
            key = self.auth.authorize(header.decode("latin-1") if header else None, needed, uid)
        except ProblemError as problem:
            response = problem_response(
                problem.kind, problem.detail, errors=problem.errors,
                path=scope["path"], headers=problem.headers,
            )  # fmt: skip
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = key
        token = ACTOR.set(key.name if key else "")
        try:
            await self.app(scope, receive, send)
        finally:
            ACTOR.reset(token)
