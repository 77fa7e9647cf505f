"""Refuse request bodies over the size limit (413) before they are read into memory.

The front layer (service/api/front.py) answers 413 at once when Content-Length says too much,
and counts the bytes of bodies sent without a length (chunked), stopping as soon as the limit is
passed.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import Response

from service.api.problems import problem_response


class BodyTooLarge(HTTPException):
    """Raised from receive() when a body without Content-Length passes the limit. An
    HTTPException, because FastAPI's body parsing re-raises those (others become a 400)."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="body over the limit")


def too_large_response(max_bytes: int, path: str) -> Response:
    """The 413 answered before the app read the body (or when its refusal escaped the app)."""
    return problem_response(
        "payload-too-large",
        f"the body may not exceed {max_bytes} bytes (TRIGGERS_MAX_BODY_BYTES)",
        path=path,
    )
