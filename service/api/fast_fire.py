"""``POST /sessions/{uid}/fire`` answered by the front layer, without FastAPI's request path.

A fire is the hot request of the service, and most of its CPU time in the API process went to
the framework rather than to the fire: routing, the ``Request`` objects, the dependency
solver, the body's validation through FastAPI's field machinery, the exit stacks and the
exception-handling wrappers (bench/fire_wrk.py; about a third of the process's time per fire).
The front layer (front.py) hands this class the requests it can answer exactly as the route
would, and only those:

* ``POST``, no ``root_path``, a path ``/sessions/{uid}/fire`` whose UID matches its pattern;
* ``Content-Type: application/json`` exactly, and no ``Idempotency-Key`` header;
* a body that orjson parses to an object and that ``FireBody`` accepts, without any of the
  text that the strict JSON reading (json_body.py) gives to the json module instead.

Anything else goes to the FastAPI route (``sessions.fire``), with the body already read handed
back to it unchanged (``Replay``), so that every refusal (422 naming the field, 400, 413, 408,
415) is the route's own answer, word for word. The fire itself is the route's: the same engine
call, the same hand-over to the runners, the same answer bytes (``views.fire_body``), and an
error raised by them (an engine refusal, Redis failing) is answered by the app's own exception
handler for it, as the route's would be; what has no handler propagates to the server error
layer, as from the route. The route stays in the OpenAPI document, which does not change.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

import orjson
from pydantic import ValidationError
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.json_body import SUSPECT
from service.api.schemas import FireBody
from service.api.views import fire_body
from service.engine.models import UID_PATTERN
from service.logs import bind_contextvars

PATH = re.compile(r"/sessions/([^/]+)/fire")
"""The route's path, as Starlette's router matches it (a UID is one segment)."""
_UID = re.compile(UID_PATTERN.removeprefix("^").removesuffix("$"))
JSON = b"application/json"
ROUTE_PATH = "/sessions/{uid}/fire"


def fire_uid(scope: Scope) -> str | None:
    """The session UID when ``scope`` is a fire the fast path may take, else None."""
    if scope["method"] != "POST" or scope.get("root_path"):
        return None
    found = PATH.fullmatch(scope["path"])
    if found is None or not _UID.fullmatch(found.group(1)):
        return None
    return found.group(1)


class Replay:
    """A ``receive`` giving back what was already read (then the error reading it raised, if
    any), then the connection's own ``receive``: the route reads the body as if it had come
    straight from the client."""

    __slots__ = ("_error", "_messages", "_receive")

    def __init__(
        self, messages: list[Message], error: BaseException | None, receive: Receive
    ) -> None:
        self._messages = deque(messages)
        self._error = error
        self._receive = receive

    async def __call__(self) -> Message:
        if self._messages:
            return self._messages.popleft()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return await self._receive()


class FastFire:
    """Answers the fires ``fire_uid`` accepts (see the module's docstring)."""

    def __init__(self, route: Any) -> None:
        """``route``: the app's fire route (its template names the request in the metrics)."""
        self.route = route

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, uid: str, app: ASGIApp
    ) -> None:
        """Serve the fire; ``app``: what serves any request this path does not take."""
        messages: list[Message] = []
        chunks: list[bytes] = []
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except Exception as error:  # too large, too slow: the route's answer to it
            await app(scope, Replay(messages, error, receive), send)
            return
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        parsed = self._parse(body) if message["type"] == "http.request" else None
        if parsed is None:
            await app(scope, Replay(messages, None, receive), send)
            return
        scope["route"] = self.route
        scope["path_params"] = {"uid": uid}
        ctx = scope["app"].state.context
        try:
            bind_contextvars(trigger=parsed.trigger)
            outcome = await ctx.engine.fire(uid, parsed.trigger, parsed.kwargs)
            await ctx.after(uid, outcome)
        except Exception as error:
            handler = self._handler(scope, error)
            if handler is None:
                raise
            request = Request(scope, Replay(messages, None, receive))
            if is_async_callable(handler):
                response = await handler(request, error)
            else:
                response = await run_in_threadpool(handler, request, error)
            await response(scope, receive, send)
            return
        answer = fire_body(uid, parsed.trigger, outcome)
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(answer)).encode()), (b"content-type", JSON)],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": answer})

    @staticmethod
    def _parse(body: bytes) -> FireBody | None:
        """The body as the route would read it, or None when the route must read it (it then
        answers whatever it answers: 400, 422)."""
        if SUSPECT.search(body):
            return None
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if type(value) is not dict:
            return None
        try:
            return FireBody.model_validate(value)
        except ValidationError:
            return None

    @staticmethod
    def _handler(scope: Scope, error: Exception) -> Any:
        """The app's handler for ``error``, as Starlette's exception layer finds it (by status
        for an HTTPException, then by class, most specific first); None: no handler below the
        server error layer (``Exception``'s handler is that layer's)."""
        handlers = scope["app"].exception_handlers
        if isinstance(error, HTTPException) and error.status_code in handlers:
            return handlers[error.status_code]
        for cls in type(error).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None
