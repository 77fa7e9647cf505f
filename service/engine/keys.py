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
    "trig",
    "inst",
    "idx",
    "latest",
    "counts",
    "outbox",
    "leases",
)


def session_keys(uid: str, prefix: str = "trg") -> list[str]:
    """The ten keys of session ``uid``. UIDs never contain braces (API.md), so the tag holds."""
    if "{" in uid or "}" in uid:
        raise ValueError("a session UID may not contain '{' or '}'")
    return [f"{prefix}:{{{uid}}}:{name}" for name in KEY_NAMES]
