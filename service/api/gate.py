"""The request gate, in front of routing: authentication and scope, and encoded slashes. The
front layer (service/api/front.py) runs it.

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

from starlette.types import Scope

from service.api.auth import Scope as AuthScope

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
    if b"%" not in raw_path:  # nothing encoded (most requests): the segments as they are
        return raw_path.decode("latin-1").split("/")
    return [
        unquote(part.decode("latin-1")).replace("/", SLASH_STAND_IN)
        for part in raw_path.split(b"/")
    ]


def needs(scope: Scope) -> tuple[Scope, AuthScope, str | None] | None:
    """What a request must show to pass: None for an ungated path, else the scope to route
    (its path rebuilt from the decoded segments when it held an encoded slash), the API-key
    scope it needs and the session UID it touches (None for paths naming no session)."""
    path = scope["path"]
    if path == "/metrics":
        return scope, "metrics", None
    if path not in GATED_PATHS and not path.startswith("/sessions/"):
        return None
    raw = scope.get("raw_path") or path.encode()
    segments = decode_segments(raw.split(b"?", 1)[0])
    if b"%2f" in raw.lower():
        scope = dict(scope, path="/".join(segments))
    # ["", "sessions", uid, ...]; the gated paths name no session
    session_part = [] if path in GATED_PATHS else segments[2:]
    uid = session_part[0] if session_part else None
    return scope, required_scope(scope["method"], session_part), uid
