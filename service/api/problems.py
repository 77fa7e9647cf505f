"""Errors as ``application/problem+json`` (RFC 9457), one stable ``type`` per kind of error.

Every refusal names what was wrong: ``errors`` lists each offending field (a dotted path into
the request: ``body.tasks.t_a.after``, ``path.uid``, ``header.Idempotency-Key``) with a message.
The ``type`` URIs are relative and resolve on the service itself (GET /problems/{kind}).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.json_body import NonFiniteNumber
from service.engine import (
    ConflictError,
    EngineError,
    IdempotencyMismatchError,
    LimitError,
    NotFoundError,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"

KINDS: dict[str, tuple[int, str]] = {
    "validation-error": (422, "The request is not valid"),
    "malformed-json": (400, "The body is not valid JSON"),
    "not-found": (404, "No such session or instance"),
    "route-not-found": (404, "Not Found"),
    "json-too-deep": (400, "The body's JSON is nested too deeply"),
    "request-timeout": (408, "The request was not received in time"),
    "conflict": (409, "The instance's status does not allow this"),
    "payload-too-large": (413, "The body is larger than the limit"),
    "unauthorized": (401, "A valid API key is required"),
    "forbidden": (403, "This API key may not do this"),
    "idempotency-in-flight": (409, "A request with this Idempotency-Key is still in progress"),
    "idempotency-key-reused": (422, "This Idempotency-Key was used with another request"),
    "method-not-allowed": (405, "Method not allowed"),
    "unsupported-media-type": (415, "The body must be application/json"),
    "unavailable": (503, "A backing service (Redis) is unavailable"),
    "outcome-unknown": (
        500,
        "The state store failed after the change was sent: it may or may not have been applied",
    ),
    "limit-exceeded": (422, "The request is over a documented size limit"),
    "internal-error": (500, "Internal error"),
}


HTTP_KINDS = {
    400: "malformed-json",  # FastAPI: "There was an error parsing the body"
    404: "route-not-found",  # raised by routing only: engine lookups answer "not-found"
    405: "method-not-allowed",
    408: "request-timeout",  # slow_clients.BodyDeadline
    413: "payload-too-large",
    415: "unsupported-media-type",
}
BODY_KINDS = {
    "malformed-json", "payload-too-large", "unsupported-media-type", "json-too-deep",
    "request-timeout",
}  # fmt: skip


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. body.trigger")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(examples=["/problems/not-found"])
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] = Field(default_factory=list)


class ProblemError(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self,
        kind: str,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or kind)
        self.kind = kind
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}


def problem_body(kind: str, detail: str | None, errors: list[FieldError], path: str) -> Problem:
    status, title = KINDS[kind]
    return Problem(
        type=f"/problems/{kind}", title=title, status=status, detail=detail, instance=path,
        errors=errors,
    )  # fmt: skip


def problem_response(
    kind: str,
    detail: str | None = None,
    *,
    errors: list[FieldError] | None = None,
    path: str = "",
    headers: dict[str, str] | None = None,
) -> Response:
    body = problem_body(kind, detail, errors or [], path)
    return Response(
        orjson.dumps(body.model_dump(exclude_none=True)),
        status_code=body.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _field_of_engine_message(message: str) -> list[FieldError]:
    """Engine messages start with the field they concern ("trigger: ...") when there is one."""
    field, sep, rest = message.partition(": ")
    if sep and " " not in field:
        return [FieldError(field=field, message=rest)]
    return []


def from_engine_error(error: EngineError) -> ProblemError:
    """The problem an engine refusal answers with: 404, 409 or 422, naming the field."""
    fields = _field_of_engine_message(error.message)
    if isinstance(error, NotFoundError):
        kind = "not-found"
    elif isinstance(error, ConflictError):
        kind = "conflict"
    elif isinstance(error, LimitError):
        kind = "limit-exceeded"
        fields = [FieldError(field=_limit_field(f.field), message=f.message) for f in fields]
    elif isinstance(error, IdempotencyMismatchError):
        kind = "idempotency-key-reused"
        fields = [FieldError(field="header.Idempotency-Key", message="reused with another body")]
    else:
        kind = "validation-error"
        fields = [FieldError(field=f"body.{f.field}", message=f.message) for f in fields]
    return ProblemError(kind, error.message, errors=fields)


def _limit_field(field: str) -> str:
    """Limits on the body name a body field; the instance limit concerns the session's state."""
    return field if field == "instances" else f"body.{field}"


CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_BEFORE_SEND = ("connecting to", "too many connections", "no connection available")


def failed_before_sending(error: RedisError) -> bool:
    """True when Redis certainly did not receive the command: no connection could be made or
    taken from the pool, or the server refused every command (loading, authentication).
    Anything else (a timeout or a connection dropped while waiting for the answer, BUSY, an
    unexpected reply) may come after the change was applied."""
    if isinstance(error, BusyLoadingError | AuthenticationError):
        return True
    if isinstance(error, RedisConnectionError | RedisTimeoutError):
        text = str(error).lower()
        return any(marker in text for marker in _BEFORE_SEND)
    return False


def redis_problem(method: str, error: RedisError, path: str) -> Response:
    """503 + Retry-After when retrying is safe (a read, or nothing was sent); otherwise, for a
    change, outcome-unknown WITHOUT Retry-After: a blind retry could apply the change twice."""
    if method.upper() in CHANGING_METHODS and not failed_before_sending(error):
        return problem_response(
            "outcome-unknown",
            "the state store failed after this change was sent; it may have been applied. "
            "Read the session to find out, or repeat the request with the same "
            "Idempotency-Key (a change already applied then answers as it first did)",
            path=path,
        )
    return problem_response(
        "unavailable", "state store unavailable; retry", path=path, headers={"Retry-After": "1"}
    )


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def validation_errors(error: RequestValidationError) -> tuple[str, list[FieldError]]:
    """The kind (malformed JSON or validation) and the offending fields of a request error."""
    fields = []
    kind = "validation-error"
    for item in error.errors():
        message = str(item.get("msg", "invalid"))
        location = _location(tuple(item.get("loc", ())))
        if item.get("type") == "json_invalid":
            kind = "malformed-json"
            location = "body"
            message = f"{message} at position {item.get('loc', ('', '?'))[-1]}"
        fields.append(FieldError(field=location, message=message))
    return kind, fields


def _not_json(request: Request) -> Response:
    """FastAPI hands a body that is not declared JSON to validation as bytes, which then reads
    "Input should be a valid dictionary": the fault is the header, so name it."""
    declared = request.headers.get("content-type")
    message = f"is {declared!r}" if declared else "is missing"
    return problem_response(
        "unsupported-media-type", f"Content-Type {message}: send application/json",
        errors=[FieldError(field="header.Content-Type", message=f"{message}; application/json "
                           "expected")],
        path=request.url.path,
    )  # fmt: skip


def _too_deep(request: Request) -> Response:
    """Valid JSON deeper than the parser's recursion limit (about 900 levels on Python 3.11) is
    refused as such, not called "not valid JSON"."""
    return problem_response(
        "json-too-deep", "the body's JSON is nested too deeply to be parsed",
        errors=[FieldError(field="body", message="nesting too deep")], path=request.url.path,
    )  # fmt: skip


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document (never a bare 500)."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, error: ProblemError) -> Response:
        return problem_response(
            error.kind, error.detail, errors=error.errors, path=request.url.path,
            headers=error.headers,
        )  # fmt: skip

    @app.exception_handler(EngineError)
    async def _engine(request: Request, error: EngineError) -> Response:
        return await _problem(request, from_engine_error(error))

    @app.exception_handler(RedisError)
    async def _redis(request: Request, error: RedisError) -> Response:
        logging.getLogger("service.api").error(
            "redis error on %s %s: %r", request.method, request.url.path, error
        )
        return redis_problem(request.method, error, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> Response:
        if isinstance(error.body, bytes) and error.body:
            return _not_json(request)
        kind, fields = validation_errors(error)
        return problem_response(kind, "see errors", errors=fields, path=request.url.path)

    @app.exception_handler(NonFiniteNumber)
    async def _non_finite(request: Request, error: NonFiniteNumber) -> Response:
        field = FieldError(field=error.field, message="not a finite JSON number")
        return problem_response(
            "validation-error", str(error.detail), errors=[field], path=request.url.path
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> Response:
        if isinstance(error.__cause__, RecursionError):
            return _too_deep(request)
        kind = HTTP_KINDS.get(error.status_code, "validation-error")
        fields = [FieldError(field="body", message=str(error.detail))] if kind in BODY_KINDS else []
        return problem_response(
            kind,
            str(error.detail),
            errors=fields,
            path=request.url.path,
            headers=dict(error.headers or {}),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        logging.getLogger("service.api").exception("unexpected error on %s", request.url.path)
        return problem_response("internal-error", type(error).__name__, path=request.url.path)
