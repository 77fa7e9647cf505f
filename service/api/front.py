"""The one ASGI layer in front of the routes: request ID, log context, HTTP metrics, the gate
(authentication, scope, encoded slashes), the body size limit and the body deadline.

Each used to be its own middleware: five nested calls, five wrappers around ``send`` and
``receive`` and five header scans per request, a measurable share of a fire's CPU time
(bench/api.py, bench/observability.py). Here the headers are read once, one object carries the
request's state, and ``send``/``receive`` are wrapped once. What each piece does, in the order
the five layers had (outermost first):

1. ``X-Request-ID`` echoed when usable, generated otherwise, on every answer, and bound with the
   path's session UID to every log line of the request (service/api/request_id.py);
2. the request counted by route template, 401s and 413s included (service/metrics.py);
3. the gate, before any body is read: 401/403 come first, even for malformed JSON
   (service/api/gate.py);
4. the body deadline: the whole body within ``TRIGGERS_BODY_TIMEOUT``, else 408 and
   ``Connection: close`` (service/api/slow_clients.py);
5. the body size limit: 413 at once for a Content-Length over ``TRIGGERS_MAX_BODY_BYTES``,
   and as soon as a chunked body passes it (service/api/limits.py);
6. the common fire (JSON body, no Idempotency-Key) answered here, without FastAPI's request
   path; every other request, and any fire it does not answer exactly as the route would, goes
   on to the app (service/api/fast_fire.py).

Bodies over the limit or too slow are refused from ``receive()`` with HTTPExceptions, so the
app's handler answers them as problem documents when FastAPI's body parsing reads them; when
one escapes the app before an answer started, this layer answers it itself.
"""

from __future__ import annotations

import asyncio
from time import perf_counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs, metrics
from service.api import gate
from service.api.auth import Authenticator
from service.api.fast_fire import JSON, FastFire, fire_uid
from service.api.limits import BodyTooLarge, too_large_response
from service.api.problems import ProblemError, problem_response
from service.api.request_id import HEADER, new_request_id, path_uid, usable_request_id
from service.api.slow_clients import BodyTooSlow, too_slow_response
from service.engine.actor import ACTOR


class Exchange:
    """One request's state: its ``receive`` (deadline and size limit) and ``send`` (request
    ID header, status for the metrics), in one object instead of one closure per layer."""

    __slots__ = ("_receive", "_send", "body_done", "deadline", "front", "received", "rid",
                 "started", "status")  # fmt: skip

    def __init__(self, front: Front, receive: Receive, send: Send, rid: bytes) -> None:
        self.front = front
        self._receive = receive
        self._send = send
        self.rid = rid
        self.status = 500
        self.started = False
        self.received = 0
        self.body_done = False
        self.deadline = asyncio.get_running_loop().time() + front.body_seconds

    async def receive(self) -> Message:
        if self.body_done:  # later receives wait for a disconnect: no deadline for those
            return await self._receive()
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self._receive()
        except TimeoutError:
            raise BodyTooSlow(self.front.body_seconds) from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.front.max_bytes:
                raise BodyTooLarge
            self.body_done = not message.get("more_body")
        else:
            self.body_done = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = int(message["status"])
            headers = [(k, v) for k, v in message.get("headers", ()) if k != HEADER]
            headers.append((HEADER, self.rid))
            message = {**message, "headers": headers}
        await self._send(message)


class Front:
    """The single middleware (see the module's docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        auth: Authenticator,
        max_bytes: int,
        body_seconds: float,
        fire: FastFire | None = None,
    ) -> None:
        self.app = app
        self.auth = auth
        self.max_bytes = max_bytes
        self.body_seconds = body_seconds
        self.fire = fire

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        rid: str | None = None
        authorization = length = content_type = None
        keyed = False
        for name, value in scope["headers"]:  # one pass; the last of a repeated header wins,
            if name == b"authorization":  # the first usable X-Request-ID, the first type
                authorization = value
            elif name == b"content-length":
                length = value
            elif name == b"content-type":
                if content_type is None:
                    content_type = value
            elif name == HEADER and rid is None:
                rid = usable_request_id(value)
            elif name == b"idempotency-key":
                keyed = True
        rid = rid or new_request_id()
        exchange = Exchange(self, receive, send, rid.encode("latin-1"))
        fields = {"request_id": rid}
        uid = path_uid(scope["path"])
        if uid is not None:
            fields["uid"] = uid
        token = logs.request_context(fields)  # an earlier request's fields are dropped
        simple = content_type == JSON and not keyed  # what the fast fire takes (fast_fire.py)
        try:
            scope = await self.serve(scope, exchange, authorization, length, simple)
        finally:
            logs.reset_context(token)
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.observe_request(
                scope["method"], route, exchange.status, perf_counter() - started
            )

    async def serve(
        self,
        scope: Scope,
        exchange: Exchange,
        authorization: bytes | None,
        length: bytes | None,
        simple: bool,
    ) -> Scope:
        """Gate, then limits, then the app; returns the scope the app was given (the gate may
        rewrite its path), whose ``route`` names the metrics' route template. ``simple``: a
        JSON body and no Idempotency-Key (a fire may then be answered here)."""
        passed = gate.needs(scope)
        if passed is None:
            await self.limited(scope, exchange, length, False)
            return scope
        scope, needed, uid = passed
        if not self.auth.enabled or (authorization is None and scope["path"] == gate.WHOAMI_PATH):
            # the inspector asks who it is before it has a key: no 401 (nor a console error)
            # for that; the answer says a key is needed and carries no data
            await self.limited(scope, exchange, length, simple)
            return scope
        try:
            key = self.auth.authorize(
                authorization.decode("latin-1") if authorization else None, needed, uid
            )
        except ProblemError as problem:
            response = problem_response(
                problem.kind, problem.detail, errors=problem.errors,
                path=scope["path"], headers=problem.headers,
            )  # fmt: skip
            await response(scope, exchange.receive, exchange.send)
            return scope
        scope.setdefault("state", {})["api_key"] = key  # for GET /sessions and /auth/key
        actor = ACTOR.set(key.name if key else "")  # the event log's actor
        try:
            await self.limited(scope, exchange, length, simple)
        finally:
            ACTOR.reset(actor)
        return scope

    async def limited(
        self, scope: Scope, exchange: Exchange, length: bytes | None, simple: bool
    ) -> None:
        """The app, with the body's size and deadline enforced (413 at once for a
        Content-Length over the limit); a ``simple`` fire goes to the fast path."""
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            response = too_large_response(self.max_bytes, scope.get("path", ""))
            await response(scope, exchange.receive, exchange.send)
            return
        uid = fire_uid(scope) if simple and self.fire is not None else None
        try:
            if uid is not None:
                assert self.fire is not None
                await self.fire(scope, exchange.receive, exchange.send, uid, self.app)
            else:
                await self.app(scope, exchange.receive, exchange.send)
        except BodyTooLarge:  # raised where no exception handler caught it
            if not exchange.started:
                response = too_large_response(self.max_bytes, scope.get("path", ""))
                await response(scope, exchange.receive, exchange.send)
        except BodyTooSlow as error:
            if not exchange.started:
                response = too_slow_response(error, scope.get("path", ""))
                await response(scope, exchange.receive, exchange.send)
