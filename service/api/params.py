"""Path parameters shared by the routes, validated as API.md says (422 naming the field)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

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
InstanceName = Annotated[
    str,
    Path(
        pattern=r"^[^#\x00-\x1f\x7f]{1,200}#\d{1,18}$",
        description="Instance name <task>#<n>, percent-encoded in the path (t_page%230).",
        examples=["t_compareResponses#0"],
    ),
]


def problems(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for the problem documents a route can answer with."""
    return {
        status: {"model": Problem, "content": {"application/problem+json": {}}}
        for status in (401, 403, 422, *statuses)
    }
