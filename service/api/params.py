"""Path parameters shared by the routes, validated as API.md says (422 naming the field)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path

from service.api.gate import SLASH_STAND_IN
from service.api.problems import Problem
from service.engine.models import UID_PATTERN

Uid = Annotated[
    str,
    Path(
        pattern=UID_PATTERN,
        description="Session UID: 1-200 characters from letters, digits and _ - . : @ +",
        examples=["applicant:123"],
    ),
]


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem documents a route can answer with (their media type is
    fixed to application/problem+json by openapi.py)."""
    return {status: {"model": Problem} for status in sorted({401, 403, 422, 503, *statuses})}


def mutating_problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A changing route can also answer 400 (unparseable body), 409 (its Idempotency-Key still
    in flight, or a transition refused), 413 (body over the limit) and 500 outcome-unknown
    (Redis failed after the change was sent)."""
    return problems(400, 409, 413, 500, *statuses)


def instance_name(
    name: Annotated[
        str,
        Path(
            pattern=r"^[^#\x00-\x1f\x7f]{1,200}#\d{1,18}$",
            description="Instance name <task>#<n>, percent-encoded in the path (t_page%230).",
            examples=["t_compareResponses#0"],
        ),
    ],
) -> str:
    """The instance name with any slash the gate stood in for restored."""
    return name.replace(SLASH_STAND_IN, "/")


InstanceName = Annotated[str, Depends(instance_name)]
