"""The key layout of one session: every key under the Redis Cluster hash tag ``{<uid>}``.

All scripts receive these keys, in this order, as KEYS (see lua/includes/lib.lua for what each
holds). Building them here, never inside Lua, is what lets every script run unchanged on Redis
Cluster: the cluster routes a script by its KEYS, all of which hash to the session's slot.
"""

from __future__ import annotations

KEY_NAMES = (
    "meta",
    "tasks",
    "defs",
    "trig",  # the earlier layout only: now TRIGGER_MARK fields of defs
    "inst",
    "idx",  # absent while the session holds at most 8 instances (lib.lua keeps_index)
    "latest",  # the earlier layout only: now LATEST_MARK fields of meta
    "counts",  # the earlier layout only: now COUNT_MARK fields of defs
    "outbox",
    "leases",
)

COUNT_MARK = "#"
"""A field ``#<task>`` of ``defs`` holds the task's instance count (lib.lua count_of)."""
TRIGGER_MARK = "##"
"""A field ``##<trigger>`` of ``defs`` holds the tasks that use the trigger (lib.lua
tasks_of_trigger), kept only for a configuration of more than lib.lua SCAN_TASKS tasks, marked
by the field ``##`` itself (smaller ones are scanned). Task names have no "#", so a def's field
never starts with either mark, and a count's field never with this one. The earlier layout
kept both in hashes of their own (``counts``, ``trig``); a session's first change that needs
them moves them into ``defs``."""


LATEST_MARK = "#"
"""A field ``#<trigger>`` of ``meta`` holds the kwargs of the trigger's latest fire (lib.lua
set_latest; no other field of meta starts with "#"). The earlier layout kept them in a hash of
their own (``latest``); a session's first change that needs them moves them into ``meta``."""


SESSION_FIELDS = {
    "v": "version", "c": "created", "u": "updated", "g": "cfgv", "n": "npos", "s": "sid",
}  # fmt: skip
"""The session's own fields of ``meta``, stored under one letter, ``created`` and ``updated``
in base 36 (lib.lua touch); the earlier layout used the whole names, times in decimal, until
the session's next change renames them."""
_SESSION_TIMES = ("c", "u")


def whole_meta(own: dict[str, str]) -> dict[str, str]:
    """``meta``'s own fields (``latest_fields``) by whole name, times as decimal ms, whichever
    layout stored them."""
    whole: dict[str, str] = {}
    for field, value in own.items():
        name = SESSION_FIELDS.get(field)
        if name is None:
            whole.setdefault(field, value)
        else:
            whole[name] = str(int(value, 36)) if field in _SESSION_TIMES else value
    return whole


def updated_ms(stored: str | None, earlier: str | None) -> int | None:
    """A session's ``updated`` time from its field ``u`` (base 36), or the earlier layout's
    ``updated`` (decimal); None when the session does not exist."""
    if stored is not None:
        return int(stored, 36)
    return None if earlier is None else int(earlier)


def latest_fields(meta: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """A read of ``meta`` split into its own fields and the latest kwargs (by trigger)."""
    own: dict[str, str] = {}
    latest: dict[str, str] = {}
    for field, value in meta.items():
        if field.startswith(LATEST_MARK):
            latest[field[len(LATEST_MARK) :]] = value
        else:
            own[field] = value
    return own, latest


REST_MARK = "#@"
"""A field ``#@<task>`` of ``defs`` holds the rest of the task's configuration when it is short
(lib.lua rest_of; a longer one is in ``tasks``). Task names never start with "@", so this is
never a count's field."""


def is_def_field(field: str) -> bool:
    """Whether a field of ``defs`` is a task's def (lib.lua is_def_field)."""
    return not field.startswith(COUNT_MARK)


def counted_task(field: str) -> str | None:
    """The task whose instance count a field of ``defs`` holds, or None (another field)."""
    if not field.startswith(COUNT_MARK) or field.startswith((TRIGGER_MARK, REST_MARK)):
        return None
    return field[len(COUNT_MARK) :]


def session_keys(uid: str, prefix: str = "trg") -> list[str]:
    """The ten keys of session ``uid``. UIDs never contain braces (API.md), so the tag holds."""
    if "{" in uid or "}" in uid:
        raise ValueError("a session UID may not contain '{' or '}'")
    return [f"{prefix}:{{{uid}}}:{name}" for name in KEY_NAMES]


def idempotency_key(uid: str, key_digest: str | None, prefix: str = "trg") -> str:
    """The record of one Idempotency-Key, in the session's slot (the 11th key of every script).

    ``key_digest`` is a hash of the client's key (bounded length, any characters); None gives
    the placeholder passed when a request has no key (scripts never write it then).
    """
    return f"{prefix}:{{{uid}}}:idem:{key_digest or '-'}"


DELIVERY_KEY_NAMES = ("wh:deliveries", "wh:due")
"""Webhook delivery records and their due times (keys 12 and 13 of every script, after the
Idempotency-Key record): in the session's slot, so they expire and are deleted with it."""


def delivery_keys(uid: str, prefix: str = "trg") -> list[str]:
    """The webhook delivery keys of session ``uid`` (see lua/includes/lib.lua)."""
    return [f"{prefix}:{{{uid}}}:{name}" for name in DELIVERY_KEY_NAMES]


EVENTS_KEY_NAME = "events"
"""The session's event log, a list of entries with stream-shaped ids (key 14 of every script,
after the delivery keys; service/engine/events.py says why not a stream): in the session's slot,
written by the script that makes the change it records."""


def events_key(uid: str, prefix: str = "trg") -> str:
    """The event log of session ``uid`` (see lua/includes/lib.lua)."""
    return f"{prefix}:{{{uid}}}:{EVENTS_KEY_NAME}"


def sessions_index_key(prefix: str = "trg") -> str:
    """The global session index: a sorted set uid -> time of its latest change (ms). Its own
    hash tag ``{sessions}`` places it on one node; it is written next to a change's script (in
    the same pipeline on a standalone Redis), never from inside one, so scripts stay in their
    session's slot. A session key is ``<prefix>:{<uid>}:...``, so none can have this name."""
    return f"{prefix}:sessions:{{sessions}}"


def pending_keys(prefix: str = "trg") -> tuple[str, str, str]:
    """The global pending index and its pre- and post-marks (not part of any session; see
    lua/standalone/rescorePending.lua). They share the hash tag ``{pending}`` so one standalone
    script can change all three on Redis Cluster; a session's keys are ``<prefix>:{<uid>}:...``,
    so no session key can ever have these names."""
    index = f"{prefix}:pending:{{pending}}"
    return index, f"{index}:pre", f"{index}:post"
