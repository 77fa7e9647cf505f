"""The request gate, in front of routing: authentication and scope, and encoded slashes.

It runs before FastAPI reads a body, so a caller without a valid key learns nothing from the
body's validation errors (401 comes first, even for malformed JSON), and it costs no per-route
dependency. The scope a request needs follows from its method and path:

* ``read``: every GET;
* ``fire``: ``POST /sessions/{uid}/fire``;
* ``configure``: ``PATCH``/``PUT /sessions/{uid}/config`` and ``DELETE /sessions/{uid}``;
* ``operate``: every other change under ``/sessions/{uid}/instances/``;
* ``metrics``: ``GET /metrics`` (Prometheus' key needs nothing else).

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

SLASH_STAND_IN = "\ue000"


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
        if scope["type"] == "http" and scope["path"] == "/metrics":
            await self.guard(scope, receive, send, "metrics", None)
            return
        if scope["type"] != "http" or not scope["path"].startswith("/sessions/"):
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        segments = decode_segments(raw.split(b"?", 1)[0])
        if b"%2f" in raw.lower():
            scope = dict(scope, path="/".join(segments))
        session_part = segments[2:]  # ["", "sessions", uid, ...]
        needed = required_scope(scope["method"], session_part)
        await self.guard(scope, receive, send, needed, session_part[0] if session_part else None)

    async def guard(
        self, scope: Scope, receive: Receive, send: Send, needed: AuthScope, uid: str | None
    ) -> None:
        """Pass the request on if its key has the scope (and the UID), else answer 401/403."""
        if self.auth.enabled:
            headers = dict(scope["headers"])
            header = headers.get(b"authorization")
            try:
                self.auth.authorize(header.decode("latin-1") if header else None, needed, uid)
            except ProblemError as problem:
                response = problem_response(
                    problem.kind, problem.detail, errors=problem.errors,
                    path=scope["path"], headers=problem.headers,
                )  # fmt: skip
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
