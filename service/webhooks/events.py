"""The event catalogue and the payload of each event.

Events are recorded in the session's outbox by the same script as the change that caused them
(``@sessionFinalized``, ``@instanceFailed:<instance>:<ms>``), so a crash cannot lose one.

* ``sessionFinalized``: the session has nothing left to do (once per session).
  ``data``: ``{"finalizedAt": ISO time}``.
* ``instanceFailed``: an instance failed (an error, a refused HTTP answer, the retry limit).
  ``data``: ``{"instance", "task", "exceptionType", "exceptionInfo"}`` (info cut at 2,000).

Body of every delivery: ``{"type", "session", "timestamp", "data"}``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.engine import Engine, NotFoundError
from service.engine.engine import iso_time
from service.engine.keys import session_keys

EVENT_TYPES = ("sessionFinalized", "instanceFailed")


def parse_member(member: str) -> tuple[str, str | None, int | None]:
    """(type, instance, time ms) of an outbox event member."""
    parts = member.removeprefix("@").split(":")
    if parts[0] == "instanceFailed" and len(parts) >= 3:
        return "instanceFailed", ":".join(parts[1:-1]), int(parts[-1])
    return parts[0], None, None


async def payload(engine: Engine, uid: str, member: str) -> dict[str, Any]:
    kind, instance, _ = parse_member(member)
    data: dict[str, Any] = {}
    if kind == "sessionFinalized":
        meta_key = session_keys(uid, engine.prefix)[0]  # a read of one field, not a snapshot
        finalized_at = await engine.client.hget(meta_key, "finalizedAt")
        if finalized_at:
            data["finalizedAt"] = iso_time(int(finalized_at))
    elif instance is not None:
        try:
            record = await engine.instance(uid, instance)
        except NotFoundError:
            record = None
        data = {"instance": instance, "task": instance.rsplit("#", 1)[0]}
        if record is not None:
            data["exceptionType"] = record.metadata.get("exceptionType")
            data["exceptionInfo"] = str(record.metadata.get("exceptionInfo", ""))[:2000]
    return {
        "type": kind,
        "session": uid,
        "timestamp": datetime.now(tz=UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
