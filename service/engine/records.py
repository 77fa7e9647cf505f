"""Instance records as the scripts keep them (lib.lua), decoded into the public model.

Shared by the engine's transitions (the record a script returns) and its read views (reader.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from service.engine.models import Instance


def instance_fields(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """The public fields of an instance from its decoded record (lib.lua's layout)."""
    kwargs = {key: orjson.loads(value) for key, value in (record.get("kwargs") or {}).items()}
    metadata = {key: orjson.loads(value) for key, value in (record.get("meta") or {}).items()}
    metadata["timestamps"] = {key: iso_time(ms) for key, ms in (record.get("ts") or {}).items()}
    return {
        "name": name,
        "task": record["task"],
        "status": record["status"],
        "kwargs": kwargs,
        "abandonState": record.get("abandon") or [],
        "metadata": metadata,
    }


def decode_instance(name: str, raw: str | bytes) -> Instance:
    """An instance record as the scripts keep it (lib.lua) turned into the public model."""
    return Instance(**instance_fields(name, orjson.loads(raw)))


def iso_time(ms: int) -> str:
    """ISO-8601 UTC with milliseconds and a Z: unambiguous, unlike the original's naive times."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ms) % 1000:03d}Z"
