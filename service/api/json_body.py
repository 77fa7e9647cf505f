"""Request bodies are standard JSON: no ``NaN``, no ``Infinity``, no number that overflows.

Python's json module (what Starlette's ``Request.json`` uses) accepts ``NaN`` and
``Infinity`` and reads ``1e400`` as infinity; pydantic then lets them through as floats and
orjson stores them as ``null``: a value silently changed. Such a body is refused with 422
naming the field, before any route runs, so nothing is stored. Every router of the API uses
StrictJsonRoute.

Bodies are parsed with orjson (several times faster than the json module on a fire's body),
except where the two could disagree: a body that may hold a non-finite number or an integer of
19 digits or more (orjson reads those beyond 64 bits as floats) is parsed by the json module,
and so is any body orjson refuses, so that invalid JSON gets the json module's error (the 400
and 422 answers name its message and position) and what only the json module reads (a lone
surrogate escape, UTF-16) is read as before.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

SUSPECT = re.compile(rb"NaN|Infinity|[eE][+-]?0*[0-9]{3}|[0-9]{19}")
"""Only a body holding one of these can hold a non-finite number (309 digits or more, an
exponent of three digits) or an integer beyond 64 bits: such a body is parsed by the json
module and walked; every other body by orjson, with no walk."""


class NonFiniteNumber(HTTPException):
    """A number JSON cannot carry; ``field`` is its dotted location in the body."""

    def __init__(self, field: str) -> None:
        super().__init__(422, f"{field}: NaN, Infinity and numbers beyond the float range are "
                         "not JSON numbers")  # fmt: skip
        self.field = field


def non_finite_path(value: Any, path: str = "body") -> str | None:
    """The location of the first non-finite float in a decoded JSON value, or None."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return where
        if isinstance(item, dict):
            stack.extend((child, f"{where}.{key}") for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((child, f"{where}.{i}") for i, child in reversed(list(enumerate(item))))
    return None


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            if SUSPECT.search(body):
                value = json.loads(body)
                where = non_finite_path(value)
                if where is not None:
                    raise NonFiniteNumber(where)
            else:
                try:
                    value = orjson.loads(body)
                except orjson.JSONDecodeError:
                    value = json.loads(body)  # its error (or what only it reads)
            self._json = value
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is parsed by StrictJsonRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
