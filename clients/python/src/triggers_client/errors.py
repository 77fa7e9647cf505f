"""Problem documents (RFC 9457) as exceptions: one class per problem ``type`` of the service.

Catch ``ProblemError`` for any refusal, or a subclass (``NotFound``, ``Conflict``, ...) for one
kind. ``errors`` names each offending field, as the service answered it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class FieldError(BaseModel):
    field: str
    message: str


class TriggersError(Exception):
    """Base of every error this package raises."""


class TriggersConnectionError(TriggersError):
    """The service could not be reached (after the retries an idempotent call gets)."""


class WaitTimeout(TriggersError, TimeoutError):
    """A wait (``wait_finalized``, ``events``) ran past its deadline."""


class InvalidWebhook(TriggersError):
    """A webhook whose signature, timestamp or body does not verify."""


class ProblemError(TriggersError):
    """The service refused the request with a problem document."""

    kind = ""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type: str = str(problem.get("type", "about:blank"))
        self.title: str = str(problem.get("title", ""))
        self.detail: str | None = problem.get("detail")
        raw_errors = problem.get("errors") or []
        self.errors = [FieldError.model_validate(e) for e in raw_errors if isinstance(e, dict)]
        fields = ", ".join(f"{e.field}: {e.message}" for e in self.errors)
        super().__init__(f"{status} {self.type}: {self.detail or self.title}" + (
            f" ({fields})" if fields else ""
        ))  # fmt: skip


class ValidationFailed(ProblemError):
    kind = "validation-error"


class MalformedJson(ProblemError):
    kind = "malformed-json"


class NotFound(ProblemError):
    kind = "not-found"


class Conflict(ProblemError):
    kind = "conflict"


class PayloadTooLarge(ProblemError):
    kind = "payload-too-large"


class Unauthorized(ProblemError):
    kind = "unauthorized"


class Forbidden(ProblemError):
    kind = "forbidden"


class IdempotencyInFlight(ProblemError):
    kind = "idempotency-in-flight"


class IdempotencyKeyReused(ProblemError):
    kind = "idempotency-key-reused"


class MethodNotAllowed(ProblemError):
    kind = "method-not-allowed"


class UnsupportedMediaType(ProblemError):
    kind = "unsupported-media-type"


class Unavailable(ProblemError):
    kind = "unavailable"


class InternalError(ProblemError):
    kind = "internal-error"


class RouteNotFound(ProblemError):
    """No such route (a wrong path or base URL), unlike NotFound (no such session/instance)."""

    kind = "route-not-found"


class RequestTimeout(ProblemError):
    kind = "request-timeout"


class JsonTooDeep(ProblemError):
    kind = "json-too-deep"


class LimitExceeded(ProblemError):
    """A documented size limit of the service (the detail names the setting)."""

    kind = "limit-exceeded"


class OutcomeUnknown(ProblemError):
    """Redis may or may not have applied the change: read the state, or repeat the call with
    the same Idempotency-Key (the client does so itself for calls it sent with one)."""

    kind = "outcome-unknown"


PROBLEM_CLASSES: dict[str, type[ProblemError]] = {
    cls.kind: cls for cls in ProblemError.__subclasses__() if cls.kind
}
"""Problem kind (the last segment of ``type``) -> its exception class."""


def problem_error(status: int, problem: dict[str, Any]) -> ProblemError:
    """The exception of a problem document: its kind's class, else ProblemError itself."""
    kind = str(problem.get("type", "")).rsplit("/", 1)[-1]
    return PROBLEM_CLASSES.get(kind, ProblemError)(status, problem)
