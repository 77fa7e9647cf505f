"""The per-session event log (written by the scripts), its HTTP views (SSE and JSON pages) and
the session index (GET /sessions), against real Redis (standalone and Cluster) and a real
uvicorn over loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.engine import Engine
from service.engine.events import EventLog, decode_line
from service.engine.index import SessionIndex
from service.engine.keys import events_key
from service.redis_server import free_port
from service.settings import Settings
from service.webhooks.store import DeliveryStore
from service.worker.runtime import WorkerRuntime
from tests.conftest import LiveServer, api_settings, engine_on, unique_prefix
from tests.test_serve import start_serve

TASKS = {"t_a": {"after": ["go"], "run": "app.a"}, "t_b": {"after": ["t_a"], "run": "app.b"}}


SSE = {"Accept": "text/event-stream"}


def new_uid(tag: str = "ev") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


async def types_of(engine: Engine, uid: str) -> list[str]:
    page = await EventLog(engine.client, engine.prefix).page(uid, None, 1000)
    return [event["type"] for event in page.events]


async def run_instance(engine: Engine, uid: str, name: str) -> None:
    claim = await engine.claim(uid, name)
    assert claim.state == "claimed"
    await engine.complete(uid, name, claim.token, {"ok": 1})


async def test_changes_are_logged_in_order_by_their_scripts(any_engine: Engine) -> None:
    engine, uid = any_engine, new_uid()
    await engine.configure(uid, {"tasks": TASKS})
    await engine.fire(uid, "go", {"x": 1})
    await run_instance(engine, uid, "t_a#0")
    claim = await engine.claim(uid, "t_b#0")
    await engine.fail(uid, "t_b#0", claim.token, "ValueError", "boom", {})
    await engine.replay(uid, "t_b#0")
    types = await types_of(engine, uid)
    assert types[:5] == ["configured", "fired", "created", "scheduled", "claimed"], types
    assert "finished" in types and "failed" in types and "replayed" in types, types
    assert types.count("fired") >= 2  # go, then the cascade t_a
    page = await EventLog(engine.client, engine.prefix).page(uid, None, 1000)
    fired = next(e for e in page.events if e["type"] == "fired")
    assert fired["trigger"] == "go" and fired["kwargsBytes"] == len('{"x":1}')
    assert any(e["type"] == "operator" and e["action"] == "replay" for e in page.events)


async def test_finalization_is_logged(engine: Engine) -> None:
    uid = new_uid()
    await engine.configure(uid, {"tasks": {"t_a": {"after": ["go"], "run": "app.a"}}})
    await engine.fire(uid, "go")
    await run_instance(engine, uid, "t_a#0")
    assert (await types_of(engine, uid))[-1] == "finalized"


async def test_log_is_capped_expires_and_is_deleted(redis_url: str) -> None:
    async with engine_on(redis_url, unique_prefix(), event_log_cap=10, session_ttl=300) as eng:
        uid = new_uid()
        await eng.configure(
            uid, {"tasks": {"t_e": {"after": ["tick"], "andEvery": "tick", "run": "app.e"}}}
        )
        for _ in range(400):
            await eng.fire(uid, "nothing-listens")
        key = events_key(uid, eng.prefix)
        assert await eng.client.llen(key) == 10  # the newest ten, exactly
        page = await EventLog(eng.client, eng.prefix).page(uid, None, 100)
        assert len(page.events) == 10 and page.next is None
        assert 0 < await eng.client.ttl(key) <= 300
        await eng.delete(uid)
        assert await eng.client.exists(key) == 0


async def test_zero_cap_turns_the_log_off(redis_url: str) -> None:
    async with engine_on(redis_url, unique_prefix(), event_log_cap=0) as eng:
        uid = new_uid()
        await eng.fire(uid, "go")
        assert await eng.client.exists(events_key(uid, eng.prefix)) == 0


async def test_pages_by_id_and_ids_only_grow(redis_url: str) -> None:
    """Every cursor resumes exactly after its entry (the binary search on ids), ids keep the
    stream shape and grow, also within one ms, and an operator's change keeps its actor."""
    async with engine_on(redis_url, unique_prefix(), event_log_cap=50) as eng:
        uid = new_uid()
        for n in range(80):
            await eng.fire(uid, f"t{n}")
        log = EventLog(eng.client, eng.prefix)
        everything = (await log.page(uid, None, 1000)).events
        ids = [event["id"] for event in everything]
        assert len(ids) == 50 and [e["trigger"] for e in everything][-1] == "t79"
        order = [tuple(map(int, i.split("-"))) for i in ids]
        assert order == sorted(order) and len(set(order)) == 50
        for position, cursor in enumerate(ids):
            page = await log.page(uid, cursor, 7)
            assert [e["id"] for e in page.events] == ids[position + 1 : position + 8]
        assert (await log.page(uid, "1-0", 3)).events == everything[:3]  # trimmed: from the head
        assert (await log.page(uid, ids[-1], 3)).events == []


async def test_a_reader_following_concurrent_changes_sees_each_entry_once(
    any_engine: Engine,
) -> None:
    """Pages read while scripts append to a full log (each append trims the oldest entry, so
    positions shift under the reader) resume exactly after their cursor: every change is seen
    once, in order. The reader starts at the newest entry and 60 changes follow, fewer than
    the cap (100), so none can be trimmed before it is read."""
    engine, uid = any_engine, new_uid()
    for n in range(100):
        await engine.fire(uid, f"old{n}")
    log = EventLog(engine.client, engine.prefix)
    assert await engine.client.llen(log.key(uid)) == 100
    since = (await log.page(uid, "0-0", 1000)).last
    triggers = [f"t{n}" for n in range(60)]

    async def writer(names: list[str]) -> None:
        for name in names:
            await engine.fire(uid, name)

    async def reader(since: str | None) -> tuple[list[str], list[str]]:
        seen: list[str] = []
        ids: list[str] = []
        while len(seen) < len(triggers):
            page = await log.page(uid, since, 7)
            seen += [event["trigger"] for event in page.events if event["type"] == "fired"]
            ids += [event["id"] for event in page.events]
            since = page.last
            if not page.events:
                await asyncio.sleep(0.001)
        return seen, ids

    writing = asyncio.gather(*(writer(triggers[k::4]) for k in range(4)))
    seen, ids = await asyncio.wait_for(reader(since), 120)
    await writing
    assert sorted(seen) == sorted(triggers)
    order = [tuple(map(int, i.split("-"))) for i in ids]
    assert order == sorted(order) and len(set(order)) == len(order)


def test_shaped_events_read_as_the_objects_they_replace() -> None:
    """Entries hold the common events as arrays (lib.lua EVENT_SHAPE) beside objects with
    coded names (other kinds, and the entries written before shapes): both read the same."""
    arrays = ('1700000000000-2 {"at":1700000000005,"a":"ops","e":[["F","go",2],["N","t#0"],'
              '["s","t#1"],["c","t#1","s"],["Z"],["C","merge"],'
              '{"t":"O","c":"replay","i":"t#1"}]}')  # fmt: skip
    objects = ('1700000000000-2 {"at":1700000000005,"a":"ops","e":[{"t":"F","g":"go","b":2},'
               '{"t":"N","i":"t#0"},{"t":"s","i":"t#1"},{"t":"c","i":"t#1","f":"s"},{"t":"Z"},'
               '{"t":"C","m":"merge"},{"t":"O","c":"replay","i":"t#1"}]}')  # fmt: skip
    entry_id, events = decode_line(arrays)
    assert (entry_id, events) == decode_line(objects)
    assert events[0] == {"id": entry_id, "at": events[0]["at"], "type": "fired", "trigger": "go",
                         "kwargsBytes": 2, "actor": "ops"}  # fmt: skip
    assert events[3]["from"] == "scheduled" and events[3]["task"] == "t"
    assert "from" not in events[2] and events[4]["type"] == "finalized"


async def test_a_stream_log_of_the_earlier_layout_reads_then_becomes_a_list(
    redis_url: str,
) -> None:
    """A log written by an earlier version (a Redis Stream) is read as it is, and turned into
    a list at the session's next logged change, ids kept: cursors stay valid."""
    async with engine_on(redis_url, unique_prefix()) as eng:
        uid = new_uid()
        await eng.fire(uid, "go")
        key = events_key(uid, eng.prefix)
        await eng.client.delete(key)
        e1 = json.dumps([{"trigger": "go", "type": "fired", "kwargsBytes": 2}])
        e2 = json.dumps([{"instance": "t#0", "type": "skipped", "from": "unstarted"}])
        await eng.client.xadd(key, {"at": "1700000000000", "e": e1}, id="1700000000000-0")
        await eng.client.xadd(key, {"at": "1700000000001", "e": e2, "a": "ops"},
                              id="1700000000000-1")  # fmt: skip
        log = EventLog(eng.client, eng.prefix)
        before = await log.page(uid, None, 100)
        assert [e["id"] for e in before.events] == ["1700000000000-0", "1700000000000-1"]
        assert before.events[1]["task"] == "t" and before.events[1]["actor"] == "ops"
        assert (await log.page(uid, "1700000000000-0", 100)).events == before.events[1:]
        await eng.fire(uid, "again")
        assert await eng.client.type(key) == "list"
        after = await log.page(uid, None, 100)
        assert after.events[:2] == before.events
        assert after.events[2]["trigger"] == "again" and after.events[2]["id"] > before.last
        assert (await log.page(uid, before.last, 100)).events == after.events[2:]


async def test_index_newest_first_with_status_and_prefix(any_engine: Engine) -> None:
    engine = any_engine
    tag = uuid.uuid4().hex[:6]
    uids = [f"app:{tag}:{n}" for n in range(5)]
    for uid in uids:
        await engine.configure(uid, {"tasks": {"t_a": {"after": ["go"], "run": "app.a"}}})
        await asyncio.sleep(0.002)
    await engine.fire(uids[1], "go")
    await run_instance(engine, uids[1], "t_a#0")  # finalized, and the newest change
    index = SessionIndex(engine.client, engine.prefix)
    page = await index.page(allowed=[], prefix=f"app:{tag}:")
    assert [s.uid for s in page.sessions] == [uids[1], uids[4], uids[3], uids[2], uids[0]]
    assert page.next is None
    done = await index.page(allowed=[], prefix=f"app:{tag}:", status="finalized")
    assert [s.uid for s in done.sessions] == [uids[1]]
    active = await index.page(allowed=[], prefix=f"app:{tag}:", status="active")
    assert uids[1] not in [s.uid for s in active.sessions] and len(active.sessions) == 4
    seen: list[str] = []
    cursor = None
    while True:
        part = await index.page(allowed=[], prefix=f"app:{tag}:", cursor=cursor, limit=2)
        seen += [s.uid for s in part.sessions]
        if part.next is None:
            break
        cursor = part.next
    assert seen == [s.uid for s in page.sessions]
    outside = await index.page(allowed=["other:"], prefix=f"app:{tag}:")
    assert outside.sessions == []
    await engine.delete(uids[0])
    await index.forget(uids[0])
    after = await index.page(allowed=[], prefix=f"app:{tag}:")
    assert uids[0] not in [s.uid for s in after.sessions]


# -- HTTP ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(redis_url: str) -> Any:
    """A live API with auth on: an operator key and a read-only key limited to 'ro:'."""
    keys = [
        {"name": "ops", "sha256": hashlib.sha256(b"ops-secret").hexdigest(), "prefixes": []},
        {"name": "reader", "sha256": hashlib.sha256(b"ro-secret").hexdigest(),
         "prefixes": ["ro:"], "scopes": ["read"]},
    ]  # fmt: skip
    settings = api_settings(redis_url, auth="on", api_keys=json.dumps(keys), events_heartbeat=0.5)
    with LiveServer(settings) as server:
        yield server


@pytest.fixture
async def ops(keyed_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": "Bearer ops-secret"}
    async with httpx.AsyncClient(base_url=keyed_server.url, headers=headers, timeout=30) as c:
        yield c


async def read_sse(lines: AsyncIterator[str], until: str, deadline: float) -> list[dict[str, Any]]:
    """Parsed SSE messages until one of type ``until`` (heartbeat comments are skipped)."""
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(lines.__anext__(), deadline - time.monotonic())
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
            if events[-1]["type"] == until:
                return events
    raise AssertionError(f"no {until} event: {events}")


async def test_sse_backlog_then_live_then_resume(ops: httpx.AsyncClient) -> None:
    uid = new_uid()
    await ops.patch(
        f"/sessions/{uid}/config", json={"tasks": {"t_a": {"after": ["go"], "run": "app.a"}}}
    )
    deadline = time.monotonic() + 30
    async with ops.stream("GET", f"/sessions/{uid}/events", headers=SSE) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        backlog = await read_sse(lines, "configured", deadline)
        assert backlog[-1]["actor"] == "ops"
        fired = await ops.post(f"/sessions/{uid}/fire", json={"trigger": "go", "kwargs": {}})
        assert fired.status_code == 200
        live = await read_sse(lines, "scheduled", deadline)
        assert live[0]["type"] == "fired" and live[0]["actor"] == "ops"
    first = backlog[-1]["id"]
    async with ops.stream(
        "GET", f"/sessions/{uid}/events", headers={"Last-Event-ID": first, **SSE}
    ) as response:
        resumed = await read_sse(response.aiter_lines(), "scheduled", time.monotonic() + 30)
    assert resumed[0]["type"] == "fired" and all(e["id"] != first for e in resumed)


async def test_sse_sends_heartbeats(ops: httpx.AsyncClient) -> None:
    uid = new_uid()
    await ops.post(f"/sessions/{uid}/fire", json={"trigger": "go"})
    async with ops.stream("GET", f"/sessions/{uid}/events", headers=SSE) as response:
        lines = response.aiter_lines()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(lines.__anext__(), 30)
            if line.startswith(": heartbeat"):
                return
    raise AssertionError("no heartbeat")


async def test_json_pages_follow_the_cursor(ops: httpx.AsyncClient) -> None:
    uid = new_uid()
    for n in range(7):
        await ops.post(f"/sessions/{uid}/fire", json={"trigger": f"g{n}"})
    accept = {"Accept": "application/json"}
    seen: list[str] = []
    since = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"since": since} if since else {})}
        page = await ops.get(f"/sessions/{uid}/events", params=params, headers=accept)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [e["trigger"] for e in body["events"] if e["type"] == "fired"]
        if body["next"] is None:
            break
        since = body["next"]
    assert seen == [f"g{n}" for n in range(7)]
    bad = await ops.get(f"/sessions/{uid}/events", params={"since": "x"}, headers=accept)
    assert bad.status_code == 422 and "since" in bad.text


async def test_namespaces_and_scopes_apply(
    keyed_server: LiveServer, ops: httpx.AsyncClient
) -> None:
    tag = uuid.uuid4().hex[:6]
    await ops.post(f"/sessions/ro:{tag}/fire", json={"trigger": "go"})
    await ops.post(f"/sessions/rw:{tag}/fire", json={"trigger": "go"})
    headers = {"Authorization": "Bearer ro-secret", "Accept": "application/json"}
    async with httpx.AsyncClient(base_url=keyed_server.url, headers=headers, timeout=30) as ro:
        listed = (await ro.get("/sessions", params={"limit": 200})).json()["sessions"]
        uids = [s["uid"] for s in listed]
        assert f"ro:{tag}" in uids and f"rw:{tag}" not in uids
        assert (await ro.get(f"/sessions/rw:{tag}/events")).status_code == 403
        assert (await ro.get(f"/sessions/ro:{tag}/events")).status_code == 200
        me = (await ro.get("/auth/key")).json()
        assert me == {"name": "reader", "scopes": ["read"], "prefixes": ["ro:"], "auth": True}
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=30) as anonymous:
        assert (await anonymous.get("/sessions")).status_code == 401
        assert (await anonymous.get(f"/sessions/ro:{tag}/events")).status_code == 401


async def test_follower_wakes_on_a_new_entry(any_engine: Engine) -> None:
    """The live part: short polls until a newer entry arrives (on a cluster too)."""
    engine, uid = any_engine, new_uid()
    await engine.fire(uid, "first")
    log = EventLog(engine.client, engine.prefix)
    last = (await log.page(uid, None, 10)).last
    assert last is not None
    follower = log.follower(uid)
    try:
        waiting = asyncio.create_task(follower.wait(last, 20_000))
        await asyncio.sleep(0.2)
        await engine.fire(uid, "second")
        found = await asyncio.wait_for(waiting, 30)
    finally:
        await follower.aclose()
    assert [event["trigger"] for event in found.events if event["type"] == "fired"] == ["second"]
    assert found.last is not None and found.last > last


README_FOLLOW = next(
    line
    for line in (Path(__file__).parent.parent / "README.md").read_text().splitlines()
    if "/events" in line and "finalized" in line and line.startswith("curl")
)


@pytest.mark.timeout(120)
def test_the_readme_curl_follows_a_session_until_finalized(api_url: str) -> None:
    uid = new_uid("applicant")
    command = README_FOLLOW.replace("localhost:8000", api_url).replace("applicant:123", uid)
    follower = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, text=True)
    try:
        config = {"tasks": {"t_a": {"after": ["go"], "run": "x", "using": "external"}}}
        with httpx.Client(base_url=api_url, timeout=30) as client:
            assert client.put(f"/sessions/{uid}/config", json=config).status_code == 200
            assert client.post(f"/sessions/{uid}/fire", json={"trigger": "go"}).status_code == 200
            done = client.post(f"/sessions/{uid}/instances/t_a%230/status",
                               json={"status": "finished"})  # fmt: skip
            assert done.status_code == 200, done.text
        output = follower.communicate(timeout=90)[0]
    finally:
        follower.kill()
    assert "event: fired" in output and output.rstrip().endswith("event: finalized"), output


@pytest.mark.timeout(120)
def test_serve_ends_open_event_streams_when_it_stops(tmp_path: Path) -> None:
    """uvicorn waits for open responses before it stops; a stream must end by itself."""
    port = free_port()
    process = start_serve(tmp_path, port)
    uid = new_uid()
    base = f"http://127.0.0.1:{port}"
    with httpx.stream("GET", f"{base}/sessions/{uid}/events", headers=SSE, timeout=60) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        rest = list(lines)  # ends when the server closes the stream
    assert time.monotonic() - started < 30, rest
    assert process.wait(timeout=60) == 0


async def test_a_webhook_attempts_outcome_is_logged(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(
        redis_url=redis_url, key_prefix=unique_prefix(), data_dir=str(tmp_path),
        outbound_allow="127.0.0.1", manager="default",
    )  # fmt: skip
    runtime = WorkerRuntime(settings)
    try:
        uid = new_uid("wh")
        await runtime.engine.configure(uid, {"tasks": {"t": {"after": ["go"], "run": "x"}}})
        delivery_id = "msg_" + "b" * 32
        store = DeliveryStore(runtime.engine)
        url = "http://127.0.0.1:99999/hook"  # refused by the outbound policy: failed at once
        assert await store.create(uid, delivery_id, url, "sessionFinalized", '{"type":"x"}')
        await runtime.deliver(uid, delivery_id)
        page = await EventLog(runtime.engine.client, runtime.engine.prefix).page(uid, None, 100)
        [event] = [e for e in page.events if e["type"].startswith("webhook")]
        assert event["type"] == "webhookFailed" and event["delivery"] == delivery_id
        assert event["event"] == "sessionFinalized"
    finally:
        await runtime.aclose()


async def test_index_drops_sessions_that_no_longer_exist(engine: Engine) -> None:
    """An expired session's entry is left out, and removed once it is older than a minute
    (a recent one may belong to a session whose first script is running right now)."""
    index = SessionIndex(engine.client, engine.prefix)
    tag = uuid.uuid4().hex[:6]
    old_ms = int(time.time() * 1000) - 120_000
    await engine.client.zadd(index.key, {f"gone:{tag}:old": old_ms})
    await engine.client.zadd(index.key, {f"gone:{tag}:new": int(time.time() * 1000)})
    page = await index.page(allowed=[], prefix=f"gone:{tag}:")
    assert page.sessions == []
    assert await engine.client.zscore(index.key, f"gone:{tag}:old") is None
    assert await engine.client.zscore(index.key, f"gone:{tag}:new") is not None


async def test_ids_keep_growing_past_a_later_last_entry(redis_url: str) -> None:
    """When the last entry's time is ahead of the server's (its clock stepped back), the next
    entry takes that time and the next count: ids stay decimal "<ms>-<n>" to readers whatever
    base lib.lua stores them in (n past 35 is two base-36 digits)."""
    async with engine_on(redis_url, unique_prefix()) as eng:
        uid = new_uid()
        await eng.fire(uid, "a")
        key = events_key(uid, eng.prefix)
        ahead = int(time.time() * 1000) + 3_600_000
        base36 = "0123456789abcdefghijklmnopqrstuvwxyz"
        ms36 = ""
        value = ahead
        while value:
            value, digit = divmod(value, 36)
            ms36 = base36[digit] + ms36
        await eng.client.rpush(key, f"{ms36}-z\x1eF\x1fb\x1f2")
        await eng.fire(uid, "c")
        events = (await EventLog(eng.client, eng.prefix).page(uid, None, 10)).events
        assert [(e["type"], e.get("trigger")) for e in events] == [
            ("fired", "a"),
            ("fired", "b"),
            ("fired", "c"),
        ]
        assert [e["id"] for e in events[1:]] == [f"{ahead}-35", f"{ahead}-36"]
        assert events[1]["kwargsBytes"] == 2
        assert (await eng.client.lindex(key, -1)).startswith(f"{ms36}-10\x1e")
