"""Refuse request bodies over the size limit (413) before they are read into memory.

A pure ASGI middleware: it answers 413 at once when Content-Length says too much, and counts
the bytes of bodies sent without a length (chunked), stopping as soon as the limit is passed.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import problem_response


class BodyTooLarge(HTTPException):
    """Raised from receive() when a body without Content-Length passes the limit. An
    HTTPException, because FastAPI's body parsing re-raises those (others become a 400)."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="body over the limit")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            "payload-too-large",
            f"the body may not exceed {self.max_bytes} bytes (TRIGGERS_MAX_BODY_BYTES)",
            path=scope.get("path", ""),
        )
        await response(scope, receive, send)
