"""``X-Request-ID``: echoed when the client sends a usable one, generated otherwise, on every
response, and bound (with the session UID of the path) to every log line of the request."""

from __future__ import annotations

import re
import uuid
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import bound_contextvars, clear_contextvars

HEADER = b"x-request-id"
USABLE = re.compile(r"[A-Za-z0-9._:@+\-]{1,128}")
"""What is echoed: short, no spaces or control characters (a header value must stay one)."""


def request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == HEADER:
            text = str(value.decode("latin-1"))
            if USABLE.fullmatch(text):
                return text
    return uuid.uuid4().hex


def path_uid(path: str) -> str | None:
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "sessions" and parts[2]:
        return unquote(parts[2])[:200]
    return None


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != HEADER]
                message = {**message, "headers": [*headers, (HEADER, rid.encode("latin-1"))]}
            await send(message)

        fields: dict[str, str] = {"request_id": rid}
        uid = path_uid(scope["path"])
        if uid is not None:
            fields["uid"] = uid
        clear_contextvars()  # a kept-alive connection's task ran the previous request
        with bound_contextvars(**fields):
            await self.app(scope, receive, send_with_id)
