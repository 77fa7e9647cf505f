"""The compact storage of configurations and instance records (issue 11 item 4), against a real
Redis: answers are the same as before, user JSON keeps every digit, and sessions stored in the
earlier layout (full JSON objects: a deployed Redis may hold them) read and change the same.

The earlier layout is made here by rewriting a session's stored values into it (instance
records as the whole record object, or as the compact JSON array of the layout after it, defs
with full field names, ``tasks`` holding the whole task configuration, instance counts, the
trigger index (however few the tasks) and the latest kwargs in hashes of their own, a status
index however few the instances, meta's own fields by whole name with decimal times, the event
log a stream, or a list of "<decimal id> <JSON>" entries), which is exactly what the earlier
scripts wrote.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.engine import Engine
from service.engine.engine import iso_time
from service.engine.events import EventLog, _order, _shaped, _split_line
from service.engine.index import SessionIndex
from service.engine.keys import (
    KEY_NAMES,
    SESSION_FIELDS,
    events_key,
    is_def_field,
    session_keys,
)
from service.engine.records import META_NAMES, TS_NAMES, load_def, load_record
from service.webhooks.runner import session_id
from tests.conftest import engine_on, unique_prefix

BIG = 9007199254740993  # 2**53 + 1: a double (Lua's number, cjson) would round it
CONFIG: dict[str, Any] = {
    "tasks": {
        "t_a": {
            "after": ["go"],
            "run": "P",
            "withParams": {"go": {"n": BIG, "f": 0.1, "deep": {"list": [], "obj": {}}}},
            "custom": {"z": 1, "a": [1.5e300, -0.0]},
            "maxRetries": 2,
        },
        "t_b": {"after": ["t_a", "side/one"], "run": "Q", "unless": ["stop"]},
        "t_every": {"after": ["go"], "andEvery": "page", "run": "R", "using": "external"},
        "t_wait": {"after": ["never"], "run": "S"},
    }
}


def keys_of(engine: Engine, uid: str) -> dict[str, str]:
    return dict(zip(KEY_NAMES, session_keys(uid, engine.prefix), strict=True))


async def build(engine: Engine, uid: str) -> None:
    """A session with instances in many states: finished (with a result), failed, running
    (with a lease), scheduled, unstarted with kwargs, abandon state, user metadata."""
    await engine.configure(uid, CONFIG)
    await engine.fire(uid, "go", {"who": {"id": BIG, "text": 'quote " and / slash'}})
    await engine.fire(uid, "page", {"p": 1})
    await engine.fire(uid, "page", {"p": 2})
    await engine.fire(uid, "page", {"p": 3})
    claim = await engine.claim(uid, "t_a#0")
    assert claim.state == "claimed" and claim.token
    await engine.complete(uid, "t_a#0", claim.token, {"r": [1, 2, {"x": BIG}]})
    await engine.fire(uid, "stop", {})
    claim = await engine.claim(uid, "t_every#0")
    assert claim.token
    await engine.fail(uid, "t_every#0", claim.token, "ValueError", "bad", {"ctx": 1})
    claim = await engine.claim(uid, "t_every#1")
    assert claim.state == "claimed"
    await engine.set_metadata(uid, "t_every#2", {"note": {"deep": [BIG]}, "ключ": "значение"})


async def to_stream_log(engine: Engine, uid: str) -> None:
    """Rewrites the session's event log as the earlier scripts wrote it: a stream, one entry
    per change (fields at, e: its events with whole names and no task, a: the actor)."""
    log = events_key(uid, engine.prefix)
    changes: dict[str, dict[str, Any]] = {}
    for event in (await EventLog(engine.client, engine.prefix).page(uid, None, 1000)).events:
        change = changes.setdefault(event["id"], {"at": event["at"], "e": []})
        if "actor" in event:
            change["a"] = event["actor"]
        stored = {key: value for key, value in event.items()
                  if key not in ("id", "at", "actor", "task")}  # fmt: skip
        change["e"].append(stored)
    await engine.client.delete(log)
    for entry_id, change in changes.items():
        fields = {"at": entry_id.split("-")[0], "e": orjson.dumps(change["e"]).decode()}
        if "a" in change:
            fields["a"] = change["a"]
        await engine.client.xadd(log, fields, id=entry_id)


def as_text(value: Any) -> str:
    """A kwargs or metadata value as the earlier layouts keep it: raw JSON text."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def earliest_record(name: str, raw: str) -> str:
    """A record in the earliest layout: the whole table as one JSON object."""
    record = load_record(raw)
    record["task"] = name.rsplit("#", 1)[0]
    record["kwargs"] = {key: as_text(value) for key, value in record["kwargs"].items()}
    record["meta"] = {key: as_text(value) for key, value in record["meta"].items()}
    return orjson.dumps(record).decode()


def array_record(raw: str) -> str:
    """A record in the earlier compact layout: a JSON array [head, kwargs, engine meta,
    abandon, meta, lease], created in decimal, kwargs and metadata as JSON text in strings."""
    record = load_record(raw)
    ts_codes = {name: code for code, name in TS_NAMES.items()}
    meta_codes = {name: code for code, name in META_NAMES.items()}
    created = record["ts"]["created"]
    head = f"{ts_codes[record['status']]} {created}" + "".join(
        f" {ts_codes[key]}{at - created}" for key, at in record["ts"].items() if key != "created"
    )
    engine_meta = {meta_codes[k]: as_text(v) for k, v in record["meta"].items() if k in meta_codes}
    meta = {k: as_text(v) for k, v in record["meta"].items() if k not in meta_codes}
    kwargs = {key: as_text(value) for key, value in record["kwargs"].items()}
    stored = [head, kwargs, engine_meta, record["abandon"], meta]
    if "lease" in record:
        stored.append(record["lease"])
    return orjson.dumps(stored).decode()


async def to_earlier_meta(engine: Engine, uid: str) -> None:
    """Renames the session's own meta fields as the earlier layout named them (whole names,
    times in decimal)."""
    key = keys_of(engine, uid)["meta"]
    for field, raw in (await engine.client.hgetall(key)).items():
        if field in SESSION_FIELDS:
            value = str(int(raw, 36)) if field in ("c", "u") else raw
            await engine.client.hdel(key, field)
            await engine.client.hset(key, SESSION_FIELDS[field], value)


def earlier_index(defs: dict[str, str]) -> dict[str, list[str]]:
    """The trigger index the earlier layouts kept for every configuration, however small:
    trigger -> the tasks whose after (with andEvery) or unless name it."""
    index: dict[str, list[str]] = {}
    for name, raw in defs.items():
        if is_def_field(name):
            definition = load_def(raw)
            for trigger in dict.fromkeys([*definition["after"], *definition["unless"]]):
                index.setdefault(trigger, []).append(name)
    return index


async def to_earlier_layout(engine: Engine, uid: str, records: str = "object") -> None:
    """Rewrites the stored records (``records``: "object", the earliest layout, or "array",
    the earlier compact one), defs and task configurations in the earlier layout."""
    keys = keys_of(engine, uid)
    client = engine.client
    for name, raw in (await client.hgetall(keys["inst"])).items():
        stored = earliest_record(name, raw) if records == "object" else array_record(raw)
        await client.hset(keys["inst"], name, stored)
        # the status index, which the earlier layout kept for every session
        await client.zadd(keys["idx"], {f"{load_record(raw)['status']}:{name}": 0})
    config = await engine.get_config(uid)
    ttl = await client.pttl(keys["defs"])
    for field, raw in (await client.hgetall(keys["defs"])).items():
        if is_def_field(field):
            continue
        await client.hdel(keys["defs"], field)
        if field.startswith(("#@", "##")):
            continue  # the earlier layout: the configuration in tasks, the index below
        await client.hset(keys["counts"], field[1:], raw)
    for trigger, tasks in earlier_index(await client.hgetall(keys["defs"])).items():
        await client.hset(keys["trig"], trigger, orjson.dumps(tasks).decode())
    for name in ("trig", "counts"):
        if ttl > 0:
            await client.pexpire(keys[name], ttl)
    for field, raw in (await client.hgetall(keys["meta"])).items():
        if field.startswith("#"):  # the latest kwargs, in a hash of their own
            await client.hdel(keys["meta"], field)
            await client.hset(keys["latest"], field[1:], raw)
    await to_earlier_meta(engine, uid)
    await to_stream_log(engine, uid)
    for name, raw in (await client.hgetall(keys["defs"])).items():
        definition = load_def(raw)
        definition.setdefault("using", "dramatiq")
        await client.hset(keys["defs"], name, orjson.dumps(definition).decode())
        full = config.tasks[name].model_dump(mode="json")
        await client.hset(keys["tasks"], name, orjson.dumps(full).decode())


def without_times(snapshot: Any) -> dict[str, Any]:
    """A snapshot as data, without what differs between two sessions built one after the other."""
    data = snapshot.model_dump(mode="json")
    for key in ("uid", "created", "updated", "sessionId", "finalizedAt"):
        data.pop(key, None)
    for instance in data["instances"].values():
        instance["metadata"].pop("timestamps")
    return data


async def unresolved(engine: Engine, uid: str) -> Any:
    """The unresolved view as data, without the instances' times."""
    tasks, instances = await engine.unresolved(uid)
    listed = [instance.model_dump(mode="json") for instance in instances]
    for instance in listed:
        instance["metadata"].pop("timestamps")
    return [task.model_dump(mode="json") for task in tasks], listed


async def test_answers_keep_user_json_exactly(redis_url: str) -> None:
    async with engine_on(redis_url, unique_prefix()) as engine:
        uid = "layout:exact"
        config = await engine.configure(uid, CONFIG)
        assert config.tasks["t_a"].withParams["go"]["n"] == BIG
        assert (await engine.get_config(uid)) == config
        await build(engine, uid)
        snapshot = await engine.snapshot(uid)
        assert snapshot.tasks == config.tasks
        assert snapshot.tasks["t_a"].model_extra == {"custom": {"z": 1, "a": [1.5e300, -0.0]}}
        finished = snapshot.instances["t_a#0"]
        assert finished.kwargs == {"go": {"who": {"id": BIG, "text": 'quote " and / slash'}}}
        assert finished.metadata["result"] == {"r": [1, 2, {"x": BIG}]}
        assert finished.metadata["actualKwargs"]["go"]["n"] == BIG
        assert finished.metadata["actualKwargs"]["go"]["who"]["id"] == BIG
        stamps = finished.metadata["timestamps"]
        assert set(stamps) == {"created", "unstarted", "scheduled", "running", "finished",
                               "lastModified"}  # fmt: skip
        assert stamps["lastModified"] == stamps["finished"]
        assert snapshot.instances["t_every#0"].status == "failed"
        assert snapshot.instances["t_every#0"].metadata["exceptionContext"] == {"ctx": 1}
        assert snapshot.instances["t_every#1"].status == "running"
        assert snapshot.instances["t_every#2"].metadata["note"] == {"deep": [BIG]}
        assert snapshot.instances["t_b#0"].abandonState == ["stop"]


TRICKY_TRIGGERS = ('a"b\\c/d', "ключ {x}", "[]")
TRICKY_KWARGS: list[dict[str, Any]] = [
    {"s": 'close } and ] and "quote" and \\', "n": [[], {}, [{"}": "]"}]], "big": BIG},
    {"": "", "e": 1e-7, "neg": -0.0, "t": True, "z": None, "u": "é\u2028"},
    {"deep": {"a": [1, [2, [3, {"b": '\\"'}]]]}},
]


async def test_kwargs_spliced_unescaped_read_back_exactly(redis_url: str) -> None:
    """The current record splices each fire's kwargs in as raw JSON, and Lua cuts them out
    without decoding them (lib.lua raw_members): strings holding brackets, quotes and
    backslashes, trigger names that need escaping, and numbers cjson would round all come
    back as fired, through an absorb (Lua decodes and re-encodes the record), a claim
    (actualKwargs stored as "=") and a retry's clone."""
    async with engine_on(redis_url, unique_prefix()) as engine:
        uid = "layout:tricky"
        task = {"after": list(TRICKY_TRIGGERS), "run": "P"}
        await engine.configure(uid, {"tasks": {"t": task}})
        for trigger, kwargs in zip(TRICKY_TRIGGERS, TRICKY_KWARGS, strict=True):
            await engine.fire(uid, trigger, kwargs)
        expected = dict(zip(TRICKY_TRIGGERS, TRICKY_KWARGS, strict=True))
        raw = await engine.client.hget(keys_of(engine, uid)["inst"], "t#0")
        assert raw[0] == "s"  # the current layout
        assert (await engine.snapshot(uid)).instances["t#0"].kwargs == expected
        claim = await engine.claim(uid, "t#0")
        assert claim.state == "claimed" and claim.token and claim.kwargs == expected
        await engine.retry(uid, "t#0", claim.token)
        claim = await engine.claim(uid, "t#1")
        assert claim.token and claim.kwargs == expected
        await engine.fail(uid, "t#1", claim.token, "E", "x", {"ctx": TRICKY_KWARGS[0]})
        replacement = {TRICKY_TRIGGERS[2]: TRICKY_KWARGS[2], TRICKY_TRIGGERS[0]: {}}
        await engine.replay(uid, "t#1", replacement)
        snapshot = await engine.snapshot(uid)
        assert snapshot.instances["t#0"].metadata["actualKwargs"] == expected
        assert snapshot.instances["t#1"].kwargs == expected
        assert snapshot.instances["t#1"].metadata["exceptionContext"] == {"ctx": TRICKY_KWARGS[0]}
        assert snapshot.instances["t#2"].kwargs == replacement


async def test_actual_kwargs_kept_when_they_differ_from_the_kwargs(redis_url: str) -> None:
    """withParams merged into the kwargs: actualKwargs is stored whole, and read back whole."""
    async with engine_on(redis_url, unique_prefix()) as engine:
        uid = "layout:actual"
        await engine.configure(uid, CONFIG)
        await engine.fire(uid, "go", {"mine": 1})
        claim = await engine.claim(uid, "t_a#0")
        assert claim.kwargs == {"go": {"mine": 1, "n": BIG, "f": 0.1,
                                       "deep": {"list": [], "obj": {}}}}  # fmt: skip
        instance = (await engine.snapshot(uid)).instances["t_a#0"]
        assert instance.metadata["actualKwargs"] == claim.kwargs


async def listing(engine: Engine, uid: str) -> list[Any]:
    """Instance names of the numbered listing (every task's, and one task's: the counts)."""
    every = await engine.reader.page_of(uid, status=None, task=None, cursor=None, limit=100)
    one = await engine.reader.page_of(uid, status=None, task="t_every", cursor=None, limit=100)
    return [[name for name, _ in every.records], [name for name, _ in one.records]]


async def logged(engine: Engine, uid: str) -> list[dict[str, Any]]:
    """The session's events without what differs between two sessions (ids, times)."""
    events = (await EventLog(engine.client, engine.prefix).page(uid, None, 1000)).events
    return [{k: v for k, v in event.items() if k not in ("id", "at")} for event in events]


async def test_small_session_hashes_stay_compact(redis_url: str) -> None:
    """A small configuration and session keep listpack (ziplist) hashes: defs and tasks hold
    short values (Redis turns a hash into a hash table past hash-max-listpack-value)."""
    async with engine_on(redis_url, unique_prefix()) as engine:
        uid = "layout:small"
        await engine.configure(uid, {"tasks": {"t": {"after": ["a"], "andEvery": "b", "run": "P"}}})
        await engine.fire(uid, "a", {})
        keys = keys_of(engine, uid)
        for name in ("defs", "meta", "inst"):
            encoding = await engine.client.object("encoding", keys[name])
            assert encoding in ("listpack", "ziplist"), (name, encoding)
        # instance counts, the trigger index and short remainders live in defs; the latest
        # kwargs in meta
        assert await engine.client.exists(keys["trig"], keys["counts"], keys["tasks"]) == 0
        assert await engine.client.exists(keys["latest"]) == 0
        assert await engine.client.hget(keys["meta"], "#a") == "{}"


async def test_a_long_remainder_stays_out_of_defs(redis_url: str) -> None:
    """A task configuration's remainder longer than 64 bytes goes to tasks (defs keeps its
    compact encoding), and moves between the two when a configuration changes its length."""
    async with engine_on(redis_url, unique_prefix()) as engine:
        uid = "layout:long"
        keys = keys_of(engine, uid)
        long = {"after": ["a"], "run": "P", "withParams": {"a": {"text": "x" * 80}}}
        short = {"after": ["a"], "run": "P"}
        config = await engine.configure(uid, {"tasks": {"t": long, "u": short}})
        assert set(await engine.client.hkeys(keys["tasks"])) == {"t"}
        assert await engine.client.object("encoding", keys["defs"]) in ("listpack", "ziplist")
        assert await engine.get_config(uid) == config
        again = await engine.configure(uid, {"tasks": {"t": short, "u": long}})
        assert set(await engine.client.hkeys(keys["tasks"])) == {"u"}
        assert "#@t" in await engine.client.hkeys(keys["defs"])
        assert "#@u" not in await engine.client.hkeys(keys["defs"])
        assert await engine.get_config(uid) == again
        assert again.tasks["u"].withParams == {"a": {"text": "x" * 80}}
        tasks, _ = await engine.unresolved(uid)
        assert {task.name for task in tasks} == {"t", "u"}
        await engine.configure(uid, {"tasks": {"v": short}}, replace=True)
        assert await engine.client.exists(keys["tasks"]) == 0
        assert sorted(await engine.client.hkeys(keys["defs"])) == ["#@v", "v"]  # no index


@pytest.mark.parametrize("records", ["object", "array"])
async def test_sessions_of_the_earlier_layout_read_and_change_the_same(
    redis_url: str, records: str
) -> None:
    async with engine_on(redis_url, unique_prefix()) as engine:
        await build(engine, "layout:new")
        await build(engine, "layout:old")
        await to_earlier_layout(engine, "layout:old", records)
        raw = await engine.client.hget(keys_of(engine, "layout:old")["inst"], "t_a#0")
        assert raw.startswith("{" if records == "object" else "[")
        assert await engine.client.exists(keys_of(engine, "layout:old")["counts"]) == 1
        old_latest = keys_of(engine, "layout:old")["latest"]
        assert await engine.client.hlen(old_latest) == 4  # go, page, t_a, stop
        old, new = await engine.snapshot("layout:old"), await engine.snapshot("layout:new")
        assert old.tasks == new.tasks
        assert without_times(old) == without_times(new)
        assert await engine.get_config("layout:old") == await engine.get_config("layout:new")
        assert await unresolved(engine, "layout:old") == await unresolved(engine, "layout:new")
        assert await listing(engine, "layout:old") == await listing(engine, "layout:new")
        assert await logged(engine, "layout:old") == await logged(engine, "layout:new")
        for uid in ("layout:old", "layout:new"):
            claim = await engine.claim(uid, "t_every#2")
            assert claim.state == "claimed" and claim.token
            await engine.complete(uid, "t_every#2", claim.token, {"done": BIG})
            await engine.fire(uid, "page", {"p": 4})
            await engine.configure(uid, {"tasks": {"t_new": {"after": ["t_every"], "run": "N"}}})
            await engine.replay(uid, "t_every#0")
        old, new = await engine.snapshot("layout:old"), await engine.snapshot("layout:new")
        assert without_times(old) == without_times(new)
        assert await engine.get_config("layout:old") == await engine.get_config("layout:new")
        assert await unresolved(engine, "layout:old") == await unresolved(engine, "layout:new")
        assert await listing(engine, "layout:old") == await listing(engine, "layout:new")
        assert await logged(engine, "layout:old") == await logged(engine, "layout:new")
        old_keys = keys_of(engine, "layout:old")
        assert await engine.client.exists(old_keys["counts"], old_keys["trig"]) == 0
        assert await engine.client.exists(old_keys["latest"]) == 0
        assert await engine.client.type(events_key("layout:old", engine.prefix)) == "list"
        defs = await engine.client.hgetall(old_keys["defs"])
        new_defs = await engine.client.hgetall(keys_of(engine, "layout:new")["defs"])

        def moved(fields: dict[str, str]) -> dict[str, str]:  # counts and the trigger index
            return {f: v for f, v in fields.items() if f.startswith("#") and f[:2] != "#@"}

        assert moved(defs) == moved(new_defs)


async def test_earlier_layout_read_in_pages(redis_url: str) -> None:
    """A session of the earlier layout whose latest kwargs or instances pass a page: read in
    pages (HSCAN), from the earlier layout's own hash, before any change converts it."""
    prefix = unique_prefix()
    async with engine_on(redis_url, prefix) as engine:
        await build(engine, "layout:paged")
        whole = await engine.snapshot("layout:paged")
        views = await unresolved(engine, "layout:paged")
        await to_earlier_layout(engine, "layout:paged")
    async with engine_on(redis_url, prefix, page_size=2) as paged:
        snapshot = await paged.snapshot("layout:paged")
        assert snapshot.latestKwargs == whole.latestKwargs
        assert without_times(snapshot) == without_times(whole)
        assert await unresolved(paged, "layout:paged") == views
        await paged.fire("layout:paged", "page", {"p": 9})  # converts it
        assert (await paged.snapshot("layout:paged")).latestKwargs["page"] == {"p": 9}


async def test_defs_with_position_and_version_written_out_read_the_same(redis_url: str) -> None:
    """A def leaves out a position and a config version of 1; the defs written before kept
    both ("p":1,"v":1): such a session reads, orders and reconfigures the same."""
    async with engine_on(redis_url, unique_prefix()) as engine:
        for uid in ("defs:new", "defs:old"):
            await engine.configure(uid, CONFIG)
        defs_key = keys_of(engine, "defs:old")["defs"]
        for name, raw in (await engine.client.hgetall(defs_key)).items():
            if is_def_field(name):
                stored = orjson.loads(raw)
                stored.setdefault("p", 1)
                stored.setdefault("v", 1)
                await engine.client.hset(defs_key, name, orjson.dumps(stored).decode())
        assert '"p":1' not in await engine.client.hget(keys_of(engine, "defs:new")["defs"], "t_a")
        for uid in ("defs:new", "defs:old"):
            await engine.configure(uid, {"tasks": {"t_z": {"after": ["go"], "run": "Z"},
                                                   "t_a": CONFIG["tasks"]["t_a"]}})  # fmt: skip
        old, new = await engine.get_config("defs:old"), await engine.get_config("defs:new")
        assert list(old.tasks) == list(new.tasks) == ["t_a", "t_b", "t_every", "t_wait", "t_z"]
        assert old == new
        for uid in ("defs:new", "defs:old"):
            await engine.fire(uid, "go", {})
        old_snapshot, new_snapshot = (
            await engine.snapshot("defs:old"),
            await engine.snapshot("defs:new"),
        )
        assert without_times(old_snapshot) == without_times(new_snapshot)


async def status_views(engine: Engine, uid: str) -> list[Any]:
    """Every view that reads by status: the listing of each status (whole, one task, in pages
    of two), the unresolved view."""
    views: list[Any] = [await unresolved(engine, uid)]
    for status in ("unstarted", "scheduled", "running", "finished", "failed", "abandoned"):
        for task in (None, "t_every"):
            names, cursor = [], None
            while True:
                page = await engine.reader.page_of(
                    uid, status=status, task=task, cursor=cursor, limit=2
                )
                names.extend(name for name, _ in page.records)
                if page.next is None:
                    break
                cursor = page.next
            views.append(names)
    return views


async def index_of(engine: Engine, uid: str) -> list[str]:
    return list(await engine.client.zrange(keys_of(engine, uid)["idx"], 0, -1))


async def test_status_index_only_past_a_few_instances(redis_url: str) -> None:
    """A session with at most 8 instances keeps no status index (lib.lua INDEX_FROM): every
    view by status reads the records instead, and answers as one that keeps it (a session of
    the earlier layout, indexed whatever its size); the 9th instance builds the index."""
    async with engine_on(redis_url, unique_prefix()) as engine:
        await build(engine, "index:read")
        await build(engine, "index:kept")
        for name, raw in (
            await engine.client.hgetall(keys_of(engine, "index:kept")["inst"])
        ).items():
            status = load_record(raw)["status"]
            await engine.client.zadd(keys_of(engine, "index:kept")["idx"], {f"{status}:{name}": 0})
        read_keys = keys_of(engine, "index:read")
        page = 4
        while True:
            assert await engine.client.exists(read_keys["idx"]) == 0
            views = await status_views(engine, "index:read")
            assert views == await status_views(engine, "index:kept")
            if await engine.client.hlen(read_keys["inst"]) == 8:
                break
            for uid in ("index:read", "index:kept"):
                await engine.fire(uid, "page", {"p": page})  # one more instance
            page += 1
        assert (await engine.snapshot("index:read")).instances["t_every#3"].status == "scheduled"
        for uid in ("index:read", "index:kept"):
            await engine.fire(uid, "page", {"p": page})  # the 9th: the index is built
        assert await index_of(engine, "index:read") == await index_of(engine, "index:kept")
        assert len(await index_of(engine, "index:read")) == 9
        # and inst is a hash table from then on (a listpack's access is O(its length))
        assert await engine.client.object("encoding", read_keys["inst"]) == "hashtable"
        assert await engine.client.hlen(read_keys["inst"]) == 9
        assert await status_views(engine, "index:read") == await status_views(engine, "index:kept")


async def test_bench_memory_json_interface(redis_url: str) -> None:
    """bench/memory.py --json rows, as the one-table harness reads them (small sizes here)."""
    from bench.memory import rows, run

    found = await run(redis_url, 30)
    table = rows(found)
    assert table[0]["name"].startswith("memory: one-task session")
    for row in table:
        assert set(row) == {"name", "value", "unit", "goal"}
        assert isinstance(row["value"], float) and row["unit"] == "B"
    assert orjson.loads(orjson.dumps({"rows": table}))["rows"] == table


def decimal_line(line: str) -> str:
    """A log entry as the layout before text entries wrote it: "<decimal id> <JSON>" (an id
    "<ms>-0" as "<ms>"), the events as JSON arrays."""
    entry_id, payload = _split_line(line)
    if not payload.startswith(("[", "{")):
        payload = orjson.dumps(_shaped(payload)).decode()
    return f"{entry_id.removesuffix('-0')} {payload}"


async def test_log_entries_of_the_decimal_layout_read_the_same(redis_url: str) -> None:
    """A log written as "<decimal id> <JSON>" (the layout before text entries with base-36
    ids) reads as the same events with the same ids; paging by those ids works across both
    layouts, and the next change appends an entry in the current layout after them."""
    async with engine_on(redis_url, unique_prefix()) as engine:
        uid = "layout:log"
        await build(engine, uid)
        log = EventLog(engine.client, engine.prefix)
        key = events_key(uid, engine.prefix)
        lines = await engine.client.lrange(key, 0, -1)
        assert all("\x1e" in line for line in lines)
        assert any(not line.partition("\x1e")[2].startswith(("[", "{")) for line in lines)
        before = (await log.page(uid, None, 1000)).events
        await engine.client.delete(key)
        await engine.client.rpush(key, *[decimal_line(line) for line in lines])
        assert (await log.page(uid, None, 1000)).events == before
        middle = before[len(before) // 2]["id"]
        assert (await log.page(uid, middle, 1000)).events == [
            event for event in before if _order(event["id"]) > _order(middle)
        ]
        await engine.fire(uid, "page", {"p": 9})
        after = (await log.page(uid, before[-1]["id"], 1000)).events
        assert [event["type"] for event in after][:1] == ["fired"]
        assert _order(after[0]["id"]) > _order(before[-1]["id"])
        assert "\x1e" in await engine.client.lindex(key, -1)
        assert (await log.page(uid, None, 1000)).events == before + after


SCAN_TASKS = 8  # lib.lua: the trigger index is kept past this many tasks
FEW: dict[str, Any] = {
    "a1": {"after": ["go"], "run": "P"},
    "a2": {"after": ["go", "side/one"], "run": "P", "unless": ['quote"d']},
    "a3": {"after": ["a1"], "andEvery": "page", "run": "P"},
    "a4": {"after": ["side/one"], "run": "P"},
    "a5": {"after": ["go"], "run": "P", "unless": ["stop"]},
    "a6": {"after": ['quote"d'], "run": "P"},
    "a7": {"after": ["gone"], "run": "P"},  # "go" is a prefix of its trigger, not its trigger
    "a8": {"after": ["a5", "page"], "run": "P"},
}
FIRES = ["gone", "page", "go", "side/one", "page", 'quote"d', "stop", "page"]


async def index_fields(engine: Engine, uid: str) -> dict[str, list[str]]:
    """The trigger index as stored ("##" the mark, with no list), lists sorted."""
    defs = await engine.client.hgetall(keys_of(engine, uid)["defs"])
    return {
        field[2:]: sorted(orjson.loads(raw)) if field != "##" else []
        for field, raw in defs.items()
        if field.startswith("##")
    }


async def fire_all(engine: Engine, uid: str) -> list[Any]:
    """What each fire of FIRES scheduled and abandoned (tasks of FEW only)."""
    outcomes = []
    for trigger in FIRES:
        fired = await engine.fire(uid, trigger, {"t": trigger})
        outcomes.append(
            [sorted(n for n in fired.scheduled if n[:2] in FEW), sorted(fired.abandoned)]
        )
    return outcomes


async def test_trigger_index_only_past_a_few_tasks(redis_url: str) -> None:
    """A configuration of at most SCAN_TASKS tasks keeps no trigger index (its defs are scanned,
    also for names JSON writers escape); one past it keeps the index with its mark, built whole
    when a merge takes it past; both answer every fire the same."""
    async with engine_on(redis_url, unique_prefix()) as engine:
        assert len(FEW) == SCAN_TASKS
        await engine.configure("index:scan", {"tasks": FEW})
        assert await index_fields(engine, "index:scan") == {}
        more = {**FEW, "z": {"after": ["elsewhere"], "run": "P"}}
        await engine.configure("index:kept", {"tasks": more})
        defs = await engine.client.hgetall(keys_of(engine, "index:kept")["defs"])
        whole = {t: sorted(names) for t, names in earlier_index(defs).items()}
        assert await index_fields(engine, "index:kept") == {"": [], **whole}
        scanned, indexed = (
            await fire_all(engine, "index:scan"),
            await fire_all(engine, "index:kept"),
        )
        assert scanned == indexed
        assert scanned[2][0] == ["a1#0", "a5#0"] and scanned[3][0] == ["a2#0", "a4#0"]
        # a merge past SCAN_TASKS builds the whole index; a replace down to a few drops it
        await engine.configure("index:scan", {"tasks": {"z": more["z"]}})
        assert await index_fields(engine, "index:scan") == await index_fields(engine, "index:kept")
        fresh = {"b": {"after": ["fresh"], "run": "P"}}
        await engine.configure("index:scan", {"tasks": fresh}, replace=True)
        assert await index_fields(engine, "index:scan") == {}
        assert (await engine.fire("index:scan", "fresh")).scheduled == ["b#0"]


async def test_an_unmarked_index_of_the_earlier_layout_is_used_and_marked(
    redis_url: str,
) -> None:
    """Earlier layouts kept the index without the mark, for every configuration: a session of
    that layout fires the same (its defs are scanned once, and a big one's index marked: it is
    complete; a small one stays scanned); its next configure keeps or drops the index by the
    number of tasks."""
    async with engine_on(redis_url, unique_prefix()) as engine:
        more = {**FEW, "z": {"after": ["elsewhere"], "run": "P"}}
        for uid in ("index:old", "index:new"):
            await engine.configure(uid, {"tasks": more})
        await engine.client.hdel(keys_of(engine, "index:old")["defs"], "##")
        kept = await index_fields(engine, "index:new")
        assert await fire_all(engine, "index:old") == await fire_all(engine, "index:new")
        assert await index_fields(engine, "index:old") == kept
        # a big one whose first change is a merge: rebuilt whole, the new task included
        extra = {"y": {"after": ["go", "elsewhere"], "run": "P"}}
        for uid in ("index:old-merged", "index:new-merged"):
            await engine.configure(uid, {"tasks": more})
            if uid == "index:old-merged":
                await engine.client.hdel(keys_of(engine, uid)["defs"], "##")
            await engine.configure(uid, {"tasks": extra})
        merged = await index_fields(engine, "index:new-merged")
        assert merged["go"] == ["a1", "a2", "a5", "y"] and merged["elsewhere"] == ["y", "z"]
        assert await index_fields(engine, "index:old-merged") == merged
        small = "index:old-small"
        for uid in (small, "index:scan-ref"):
            await engine.configure(uid, {"tasks": FEW})
        defs = await engine.client.hgetall(keys_of(engine, small)["defs"])
        for trigger, names in earlier_index(defs).items():
            await engine.client.hset(
                keys_of(engine, small)["defs"], f"##{trigger}", orjson.dumps(names).decode()
            )
        assert await fire_all(engine, small) == await fire_all(engine, "index:scan-ref")
        assert "" not in await index_fields(engine, small)  # small: still scanned, not marked
        await engine.configure(small, {"tasks": {"a1": FEW["a1"]}})
        assert await index_fields(engine, small) == {}


async def test_meta_of_the_earlier_layout_read_and_renamed(redis_url: str) -> None:
    """A session whose meta has the earlier layout's names (version, created, updated in
    decimal, cfgv, npos, sid) reads the same, is listed with its updated time, keeps its
    sessionId, and its next change renames the fields (created and sessionId kept, version
    counted on); one made before sessionIds existed gets one then."""
    async with engine_on(redis_url, unique_prefix()) as engine:
        uid = "meta:old"
        await build(engine, uid)
        before = await engine.snapshot(uid)
        key = keys_of(engine, uid)["meta"]
        assert set(await engine.client.hkeys(key)) >= {"v", "c", "u", "g", "n", "s"}
        await to_earlier_meta(engine, uid)
        assert await engine.client.hget(key, "created") == str(before.created)
        assert (await engine.snapshot(uid)).model_dump() == before.model_dump()
        index = SessionIndex(engine.client, engine.prefix)
        listed = await index.page(allowed=[], prefix="meta:")
        assert [(item.uid, item.updated) for item in listed.sessions] == [
            (uid, iso_time(before.updated))
        ]
        assert await session_id(engine, uid) == before.sessionId
        await engine.configure(uid, {"tasks": {"t_new": {"after": ["go"], "run": "N"}}})
        after = await engine.snapshot(uid)
        assert set(await engine.client.hkeys(key)).isdisjoint(SESSION_FIELDS.values())
        assert (after.created, after.sessionId) == (before.created, before.sessionId)
        assert after.version == before.version + 1 and after.updated >= before.updated
        assert after.tasks["t_new"].after == ["go"]
        positions = [name for name in after.tasks]
        assert positions[-1] == "t_new"  # the next position was kept (npos)
        await engine.client.hdel(key, "s")
        await to_earlier_meta(engine, uid)
        await engine.fire(uid, "page", {"p": 5})
        renewed = await engine.snapshot(uid)
        assert renewed.sessionId and renewed.sessionId != before.sessionId
