"""Deadlines for receiving a request, so that slow clients cannot hold connections open.

A client that trickles its headers or its body one byte at a time keeps a connection, its
buffers and (for the body) a running request open for as long as it likes: uvicorn's only
timer, ``timeout_keep_alive``, covers the idle time *between* requests and is reset by every
byte received. Two guards, one per phase, each answering ``408`` with a problem document and
``Connection: close``:

* headers (``TRIGGERS_HEADER_TIMEOUT``): ``header_deadline_protocol`` subclasses uvicorn's
  httptools protocol. Neither uvicorn nor httptools has a header timeout, and no ASGI
  middleware can help: the app is called only once the headers are complete. The timer starts
  when the connection opens (a client that never sends anything is closed too) and when the
  first byte of each following request arrives, and stops when the headers are complete.
* body (``TRIGGERS_BODY_TIMEOUT``): the front layer's ``receive`` (service/api/front.py). The
  whole body must arrive within the deadline after the headers (a total, not a per-chunk idle
  time, which a trickle would reset forever). Once the body is in, the app may take as long as
  it needs.

Behind a reverse proxy that buffers whole requests (nginx's default, Envoy with a buffer
filter), the proxy absorbs slow clients and these deadlines never fire for it (README).
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.exceptions import HTTPException
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.api.problems import FieldError, problem_body, problem_response


def _timeout_answer(detail: str, field: str, path: str) -> bytes:
    """A whole HTTP/1.1 408 answer, for the protocol level where there is no ASGI app yet."""
    body = problem_body("request-timeout", detail, [FieldError(field=field, message=detail)], path)
    content = orjson.dumps(body.model_dump(exclude_none=True))
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(content)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + content


def header_deadline_protocol(seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a deadline for a request's headers (``seconds``)."""

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _in_headers = False  # a request's first byte came, its headers are not complete yet

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True
            if self._header_timer is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _disarm(self) -> None:
            timer, self._header_timer = self._header_timer, None
            if timer is not None:
                timer.cancel()

        def _headers_too_slow(self) -> None:
            """408 to a request that began; a connection that sent nothing is just closed
            (an unasked-for answer would confuse a proxy's pooled idle connection)."""
            self._header_timer = None
            if self.transport.is_closing():
                return
            answering = self.cycle is None or self.cycle.response_complete  # never mid-answer
            if self._in_headers and answering:
                detail = f"the request's headers took longer than {seconds:g} s"
                path = self.url.decode("latin-1").split("?", 1)[0]
                self.transport.write(_timeout_answer(detail, "headers", path))
            self.transport.close()

    return HeaderDeadlineProtocol


class BodyTooSlow(HTTPException):
    """Raised from receive() when the body's deadline passes. An HTTPException, because
    FastAPI's body parsing re-raises those (others become a 400); its handler in problems.py
    answers 408 with these headers."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            status_code=408,
            detail=f"the request's body took longer than {seconds:g} s",
            headers={"Connection": "close"},
        )


def too_slow_response(error: BodyTooSlow, path: str) -> Response:
    """The 408 for a body that did not arrive in time, when the refusal escaped the app."""
    return problem_response(
        "request-timeout", str(error.detail),
        errors=[FieldError(field="body", message=str(error.detail))],
        path=path, headers=dict(error.headers or {}),
    )  # fmt: skip
