"""Instance records and task definitions as the scripts keep them (lib.lua), decoded.

Shared by the engine's transitions (the record a script returns) and its read views (reader.py).

Every layout a deployed Redis may hold is read: the one lib.lua writes now (an instance record
is a text head then its kwargs spliced in unescaped, a def has one-letter keys: encode_record,
encode_def), the earlier compact record (a JSON array, kwargs escaped into strings) and the
earliest layout (full JSON objects). ``load_record`` and ``load_def`` turn them into the full
form; a script rewrites a record in the current layout at its next change.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

from service.engine.models import Instance, TaskConfig

META_NAMES = {
    "k": "actualKwargs", "a": "attempt", "r": "result", "l": "logLevel", "t": "exceptionType",
    "i": "exceptionInfo", "x": "exceptionContext", "c": "cascade", "d": "depth", "p": "parent",
    "o": "cooldown",
}  # fmt: skip
"""Metadata the engine writes, stored under one-letter codes (lib.lua META_CODE)."""
TS_NAMES = {
    "m": "lastModified", "u": "unstarted", "s": "scheduled", "r": "running", "f": "finished",
    "x": "failed", "p": "replayed", "k": "skipped", "a": "abandoned",
}  # fmt: skip
"""Instance times, stored under one-letter codes as ms after ``created``, and the status, stored
as the code of its time (lib.lua TS_CODE)."""
_TIME = re.compile(r"([A-Za-z]+)(-?\d*)")
"""One time of a record's head: its code, then ms after ``created`` (none: the time is absent)."""
_REST = re.compile(r"[{\[]")
"""Where a current record's head ends: the head never holds "{" or "["."""
DEF_FIELDS = ("after", "unless", "andEvery", "using", "maxRetries")
"""The fields of a task configuration its def holds: the ``tasks`` hash keeps the rest."""
DEFAULT_MAX_RETRIES = 3  # lib.lua encode_def leaves this value out


def _cjson_string(text: str) -> str:
    """A string as Lua's cjson encodes it (it escapes "/" too; names have no control chars)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("/", "\\/")
    return f'"{escaped}"'


def kwargs_text(kwargs: dict[str, str]) -> str:
    """The instance's kwargs as one JSON object, keys sorted (lib.lua kwargs_text)."""
    parts = [f"{_cjson_string(key)}:{kwargs[key]}" for key in sorted(kwargs)]
    return "{" + ",".join(parts) + "}"


def load_record(raw: str | bytes) -> dict[str, Any]:
    """A stored instance record in its full form: {status, kwargs, abandon, meta, ts, lease?}
    (``task`` only when the earliest layout stored it: it is the name's part before "#").
    kwargs map each trigger to its kwargs: raw JSON text in the earlier layouts, the decoded
    object in the current one (which splices them in unescaped); ``kwargs_value`` takes both.
    """
    text = raw.decode() if isinstance(raw, bytes) else raw
    first = text[:1]
    if first in ("{", "["):  # the earliest layout (an object), or the earlier one (an array)
        decoded = orjson.loads(text)
        if isinstance(decoded, dict):
            return decoded
        base = 10
    else:  # "<head><kwargs>" or "<head>[<kwargs>,<engine>,...]" (lib.lua encode_record)
        at = _REST.search(text)
        if at is None:
            raise ValueError(f"not a stored instance record: {text[:40]!r}")
        rest = orjson.loads(text[at.start() :])
        decoded = [text[: at.start()], *(rest if at.group() == "[" else [rest, {}])]
        base = 36
    code, created_text, *times = decoded[0].split(" ")
    status = TS_NAMES.get(code, code)
    kwargs = decoded[1] or {}
    meta = dict(decoded[4] or {}) if len(decoded) > 4 else {}
    for key, value in (decoded[2] or {}).items():
        meta[META_NAMES.get(key, key)] = value
    if meta.get("actualKwargs") == "=":
        meta["actualKwargs"] = (
            kwargs_text(kwargs) if base == 10 else {key: kwargs[key] for key in sorted(kwargs)}
        )
    created = int(created_text, base)
    ts: dict[str, int] = {"created": created}
    seen: set[str] = set()
    for token in times:
        found = _TIME.fullmatch(token)
        if found is None:
            raise ValueError(f"not a stored time: {token!r}")
        key, delta = found.groups()
        seen.add(key)
        if delta:
            ts[TS_NAMES.get(key, key)] = created + int(delta)
    if "u" not in seen:
        ts["unstarted"] = created
    if "m" not in seen and status in ts:
        ts["lastModified"] = ts[status]
    record = {"status": status, "kwargs": kwargs, "meta": meta, "ts": ts,
              "abandon": (decoded[3] or []) if len(decoded) > 3 else []}  # fmt: skip
    if len(decoded) > 5:
        record["lease"] = decoded[5]
    return record


def kwargs_value(value: Any) -> Any:
    """A record's kwargs (or metadata) value decoded: raw JSON text in the earlier layouts and
    in metadata; already decoded where the current layout splices it in unescaped."""
    return orjson.loads(value) if isinstance(value, str) else value


def instance_fields(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """The public fields of an instance from its decoded record (lib.lua's layout). kwargs go
    in name order: a claim merges them in that order, which lets the record store a claim's
    actualKwargs as "the same as the kwargs"."""
    raw_kwargs = record.get("kwargs") or {}
    kwargs = {key: kwargs_value(raw_kwargs[key]) for key in sorted(raw_kwargs)}
    metadata = {key: kwargs_value(value) for key, value in (record.get("meta") or {}).items()}
    metadata["timestamps"] = {key: iso_time(ms) for key, ms in (record.get("ts") or {}).items()}
    return {
        "name": name,
        "task": record.get("task") or name.rsplit("#", 1)[0],
        "status": record["status"],
        "kwargs": kwargs,
        "abandonState": record.get("abandon") or [],
        "metadata": metadata,
    }


def decode_instance(name: str, raw: str | bytes) -> Instance:
    """An instance record as the scripts keep it (lib.lua) turned into the public model."""
    return Instance(**instance_fields(name, load_record(raw)))


def load_def(raw: str | bytes) -> dict[str, Any]:
    """A stored def in its full form: {after, unless, every?, maxRetries, using?, pos, v}."""
    stored = orjson.loads(raw)
    if "after" in stored:
        return dict(stored)
    after = list(stored["a"] or [])
    if "e" in stored and stored["e"] not in after:
        after.append(stored["e"])
    full = {
        "after": after,
        "unless": stored.get("u") or [],
        "maxRetries": stored.get("r", DEFAULT_MAX_RETRIES),
        "pos": stored.get("p", 1),  # absent: 1 (lib.lua encode_def)
        "v": stored.get("v", 1),
    }
    for code, field in (("e", "every"), ("g", "using")):
        if code in stored:
            full[field] = stored[code]
    return full


def config_rest(task: TaskConfig) -> str:
    """What ``tasks`` stores of a task: its configuration without the fields its def holds
    (withParams left out when empty). Raw JSON: Lua splices it into answers, never decodes it."""
    rest = task.model_dump(mode="json", exclude=set(DEF_FIELDS))
    if rest.get("withParams") == {}:
        del rest["withParams"]
    return orjson.dumps(rest).decode()


def task_config(definition: dict[str, Any], rest: str | bytes | None) -> TaskConfig:
    """A task's configuration from its def (``load_def``) and the remainder ``tasks`` stores
    (lib.lua config_text; a remainder of the earlier layout is the whole configuration)."""
    fields: dict[str, Any] = {
        "after": list(definition["after"] or []),
        "unless": list(definition["unless"] or []),
        "using": definition.get("using") or "dramatiq",
        "maxRetries": definition["maxRetries"],
    }
    if definition.get("every") is not None:
        fields["andEvery"] = definition["every"]
    fields.update(orjson.loads(rest) if rest else {})
    return TaskConfig.model_validate(fields)


def iso_time(ms: int) -> str:
    """ISO-8601 UTC with milliseconds and a Z: unambiguous, unlike the original's naive times."""
    ms = int(ms)  # formatted by hand: strftime cost twice as much, on every record decoded
    t = time.gmtime(ms // 1000)
    return f"{t[0]:04d}-{t[1]:02d}-{t[2]:02d}T{t[3]:02d}:{t[4]:02d}:{t[5]:02d}.{ms % 1000:03d}Z"
