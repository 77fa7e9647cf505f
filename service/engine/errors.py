"""Typed engine errors, one per kind of refusal a script can return.

Scripts answer ``redis.error_reply("<KIND> <message>")`` before writing anything, so every
error here means the session was left exactly as it was.
"""

from __future__ import annotations

from redis.exceptions import ResponseError


class EngineError(Exception):
    """Base of the engine's refusals. ``kind`` is stable; the API maps it to a status code."""

    kind = "ENGINE"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(EngineError):
    """Unknown session or instance (HTTP 404)."""

    kind = "NOT_FOUND"


class ConflictError(EngineError):
    """A transition the instance's current status (or lease) does not allow (HTTP 409)."""

    kind = "CONFLICT"


class InvalidError(EngineError):
    """Input the engine refuses: malformed configuration, unknown status (HTTP 422)."""

    kind = "INVALID"


class LimitError(InvalidError):
    """Input over one of the documented limits (TRIGGERS_MAX_...), refused before any write so
    that no request can hold Redis for long (HTTP 422, problem type limit-exceeded)."""

    kind = "LIMIT"


class IdempotencyMismatchError(EngineError):
    """The Idempotency-Key was already used with another request (HTTP 422)."""

    kind = "IDEMPOTENCY"


_KINDS: dict[str, type[EngineError]] = {
    cls.kind: cls
    for cls in (NotFoundError, ConflictError, InvalidError, LimitError, IdempotencyMismatchError)
}


def from_response_error(error: ResponseError) -> Exception:
    """The typed error for a script's error reply; other Redis errors are returned unchanged."""
    text = str(error)
    kind, _, message = text.partition(" ")
    cls = _KINDS.get(kind)
    return cls(message) if cls else error
