"""The engine's checks of its callers' input, before anything is sent to Redis.

Each refuses with ``InvalidError`` naming the field (the API answers 422 with it); what passes
comes back in the form the scripts take. Kept apart from engine.py so that the engine reads as
its transitions; the API's models check the same things earlier for HTTP callers, and these
checks guard every other caller (the worker, Python tasks, the command line).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from service.engine.errors import InvalidError

NAME_RE = re.compile(r"[^#\x00-\x1f\x7f]{1,200}")
INSTANCE_RE = re.compile(r"(?P<task>[^#\x00-\x1f\x7f]{1,200})#(?P<n>\d{1,18})")
MAX_LEASE_MS = 24 * 3600 * 1000
RESERVED_METADATA = frozenset(
    {"timestamps", "depth", "parent", "attempt", "cooldown", "actualKwargs"}
)
"""Metadata the engine keeps and relies on (status times, the retry budget's depth, the
lineage, the attempt count, the cooldown, the kwargs a run got): no caller writes them."""


def name(value: str, field: str) -> str:
    """Task and trigger names (API.md): 1-200 characters, no '#', no control characters."""
    if isinstance(value, str) and NAME_RE.fullmatch(value):
        return value
    raise InvalidError(f"{field}: 1 to 200 characters without '#' or control characters")


def instance(value: str) -> str:
    if not isinstance(value, str) or not INSTANCE_RE.fullmatch(value):
        raise InvalidError("instance: '<task>#<n>' expected")
    return value


def json_object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidError(f"{field}: a JSON object expected")
    payload(value, field)
    return value


def payload(value: Any, field: str) -> str:
    """JSON text of an object argument (None: {}), refusing what is not a JSON object."""
    if value is None:
        return "{}"
    if not isinstance(value, dict):
        raise InvalidError(f"{field}: a JSON object expected")
    try:
        return orjson.dumps(value).decode()
    except TypeError as error:
        raise InvalidError(f"{field}: not JSON-serializable ({error})") from None


def kwargs_map(kwargs: Any, field: str) -> dict[str, Any]:
    """A per-trigger kwargs map: each value an object (null becomes {}, as A5 says)."""
    mapping = json_object(kwargs, field)
    return {
        name(trigger, f"{field}.{trigger}"): json_object(value, f"{field}.{trigger}")
        for trigger, value in mapping.items()
    }


def token(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidError("token: the lease token of a claim (a string) expected")
    return value


def lease(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidError("lease_ms: a whole number of milliseconds expected")
    if not 0 < value <= MAX_LEASE_MS:
        raise InvalidError(f"lease_ms: between 1 and {MAX_LEASE_MS} expected")
    return value


def level(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise InvalidError("log_level: a logging level from 0 to 100 expected")
    return value


def metadata(
    value: Any, field: str = "metadata", reserved: frozenset[str] = RESERVED_METADATA
) -> dict[str, Any]:
    mapping = json_object(value, field)
    refused = reserved & mapping.keys()
    if refused:
        raise InvalidError(f"{field}.{min(refused)}: written by the engine only")
    return mapping
