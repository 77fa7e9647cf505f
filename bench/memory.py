"""Memory benchmark: bytes Redis holds per session and per finished instance (issue 11 item 4).

Two measurements, made through the Engine on a real redis-server (MEMORY USAGE, samples 0):

* a one-task session after two fires (the task waits for both triggers, so the second fire
  schedules its one instance): every key of the session, summed, with a per-key breakdown;
  summed twice, the state keys alone (what the issue's 2,101 B baseline counted) and with the
  event log (``events``, on by default: TRIGGERS_EVENT_LOG_MAX).
  The global indexes a session also adds to (session index, pending index) are shown apart:
  they are not keys of the session and are not part of the goal.
* finished instances: an ``andEvery`` task whose instances are fired, claimed and completed (so
  each is a finished record, as most records of a long-lived session are) until the session
  holds 10 and 10,000 of them; bytes per instance is the difference over the 9,990 added, and
  "beyond kwargs" subtracts the bytes of each instance's own kwargs (the user payload).

Goals: <= 1,000 B for the session's state keys (and, as far as it goes, with its event log),
<= 300 B per finished instance plus its kwargs. MEMORY USAGE depends on the redis-server
(version, allocator): the harness starts the one service/redis_server.py finds.
Run: ``.venv/bin/python bench/memory.py`` (starts its own redis-server; ``TRIGGERS_REDIS_URL``
to use another). ``--json`` prints ``{"rows": [{"name", "value", "unit", "goal"}]}`` for the
one-table harness; ``--instances N`` changes the larger size (default 10,000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import uuid
from contextlib import ExitStack
from typing import Any

import orjson
from redis.asyncio import Redis

from service.engine import Engine
from service.engine.keys import (
    DELIVERY_KEY_NAMES,
    EVENTS_KEY_NAME,
    KEY_NAMES,
    delivery_keys,
    events_key,
    pending_keys,
    session_keys,
    sessions_index_key,
)
from service.redis_server import RedisServer

SESSION_GOAL = 1000
INSTANCE_GOAL = 300
SMALL_CONFIG = {"tasks": {"t_report": {"after": ["applicant", "documents"], "run": "P"}}}
SMALL_FIRES = (("applicant", {"id": 123}), ("documents", {"count": 2}))
PAGE_TASK = {"after": ["applicant"], "andEvery": "pageReceived", "run": "P"}
PAGE_CONFIG = {"tasks": {"t_page": PAGE_TASK}}
PAGE_KWARGS: dict[str, Any] = {"page": 3, "responses": {"q1": "yes", "q2": [1, 2, 3]}}
APPLICANT: dict[str, Any] = {"id": 123}


def key_names(uid: str, prefix: str) -> dict[str, str]:
    """Every key a session may have (scripts' KEYS 1-10, 12-14; the Idempotency-Key record is
    absent: these requests carry none), by short name."""
    names = dict(zip(KEY_NAMES, session_keys(uid, prefix), strict=True))
    names.update(zip(DELIVERY_KEY_NAMES, delivery_keys(uid, prefix), strict=True))
    names[EVENTS_KEY_NAME] = events_key(uid, prefix)
    return names


async def usage(client: Redis, keys: dict[str, str]) -> dict[str, int]:
    """MEMORY USAGE of each key (0 when absent)."""
    found: dict[str, int] = {}
    for name, key in keys.items():
        found[name] = int(await client.memory_usage(key, samples=0) or 0)
    return found


def global_keys(prefix: str) -> dict[str, str]:
    index, pre, post = pending_keys(prefix)
    return {"sessions index": sessions_index_key(prefix), "pending": index, "pending pre": pre,
            "pending post": post}  # fmt: skip


async def small_session(client: Redis, url_prefix: str) -> tuple[dict[str, int], dict[str, int]]:
    """Per-key bytes of a one-task session after two fires, and what the global indexes grew
    by (measured against the same indexes before the session existed)."""
    engine = Engine(client, prefix=url_prefix, finalize=True)
    await engine.load_scripts()
    before = await usage(client, global_keys(url_prefix))
    uid = "bench:memory:small"
    await engine.configure(uid, SMALL_CONFIG)
    for trigger, kwargs in SMALL_FIRES:
        await engine.fire(uid, trigger, kwargs)
    per_key = await usage(client, key_names(uid, url_prefix))
    after = await usage(client, global_keys(url_prefix))
    grown = {name: after[name] - before[name] for name in after}
    await engine.delete(uid)
    return per_key, grown


async def grow_finished(engine: Engine, uid: str, count: int) -> None:
    """Adds ``count`` finished instances: fire, claim, complete (result {}) each."""
    for _ in range(count):
        outcome = await engine.fire(uid, "pageReceived", PAGE_KWARGS)
        for name in outcome.scheduled:
            claim = await engine.claim(uid, name)
            assert claim.state == "claimed" and claim.token, claim
            await engine.complete(uid, name, claim.token, {})


async def finished_instances(
    client: Redis, prefix: str, large: int
) -> tuple[float, float, dict[str, float]]:
    """Bytes per finished instance between 10 and ``large`` instances, the same beyond the
    instance's own kwargs, and the per-key share per instance."""
    engine = Engine(client, prefix=prefix, finalize=True)
    await engine.load_scripts()
    uid = "bench:memory:instances"
    await engine.configure(uid, PAGE_CONFIG)
    await engine.fire(uid, "applicant", APPLICANT)
    keys = key_names(uid, prefix)
    small = 10
    await grow_finished(engine, uid, small)
    at_small = await usage(client, keys)
    await grow_finished(engine, uid, large - small)
    at_large = await usage(client, keys)
    added = large - small
    per_key = {name: (at_large[name] - at_small[name]) / added for name in keys}
    per_instance = sum(per_key.values())
    kwargs_bytes = len(orjson.dumps(APPLICANT)) + len(orjson.dumps(PAGE_KWARGS))
    await engine.delete(uid)
    return per_instance, per_instance - kwargs_bytes, per_key


async def run(url: str, large: int) -> dict[str, Any]:
    client = Redis.from_url(url, decode_responses=True)
    try:
        tag = uuid.uuid4().hex[:8]
        per_key, grown = await small_session(client, f"bm-{tag}")
        per_instance, beyond, instance_keys = await finished_instances(client, f"bm-{tag}", large)
    finally:
        await client.aclose()
    return {
        "session": per_key,
        "global": grown,
        "instance": per_instance,
        "beyond": beyond,
        "instance_keys": instance_keys,
        "large": large,
    }


def rows(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The harness rows: the two goals first, then the per-key breakdowns."""
    session_total = sum(found["session"].values())
    state_total = session_total - found["session"].get(EVENTS_KEY_NAME, 0)
    out: list[dict[str, Any]] = [
        {"name": "memory: one-task session after two fires, state keys", "value":
         float(state_total), "unit": "B", "goal": f"<= {SESSION_GOAL:,}"},
        {"name": "memory: one-task session after two fires, with its event log", "value":
         float(session_total), "unit": "B", "goal": f"<= {SESSION_GOAL:,}"},
        {"name": f"memory: per finished instance beyond its kwargs (10 -> {found['large']:,})",
         "value": round(found["beyond"], 1), "unit": "B", "goal": f"<= {INSTANCE_GOAL}"},
        {"name": "memory: per finished instance, kwargs included", "value":
         round(found["instance"], 1), "unit": "B", "goal": ""},
    ]  # fmt: skip
    for name, value in found["session"].items():
        if value:
            out.append({"name": f"memory: session key {name}", "value": float(value), "unit": "B",
                        "goal": ""})  # fmt: skip
    for name, value in found["global"].items():
        if value:
            out.append({"name": f"memory: global {name} (not the session's)",
                        "value": float(value), "unit": "B", "goal": ""})  # fmt: skip
    for name, value in found["instance_keys"].items():
        if round(value, 1):
            out.append({"name": f"memory: per instance, key {name}", "value": round(value, 1),
                        "unit": "B", "goal": ""})  # fmt: skip
    return out


def print_table(table: list[dict[str, Any]]) -> None:
    width = max(len(row["name"]) for row in table)
    print(f"{'measure':<{width}} {'bytes':>10} {'goal':>8}")
    for row in table:
        print(f"{row['name']:<{width}} {row['value']:>10,.1f} {row['goal']:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the harness's JSON rows")
    parser.add_argument("--instances", type=int, default=10_000, help="the larger size")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = os.environ.get("TRIGGERS_REDIS_URL")
        if not url:
            url = stack.enter_context(RedisServer()).url
        found = asyncio.run(run(url, max(args.instances, 11)))
    table = rows(found)
    if args.json:
        print(json.dumps({"rows": table}))
    else:
        print_table(table)


if __name__ == "__main__":
    main()
