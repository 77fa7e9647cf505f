"""Session identity (issue 14, item 7): every incarnation of a session gets its own opaque
``sessionId``, created with the session, kept by every later change, shown by the snapshot,
``GET /sessions/{uid}`` and a claim, and new after a DELETE (or a TTL expiry) and reuse of
the UID, so that identifiers derived from it (HTTP tasks' Idempotency-Key, webhook ids)
never repeat for a new session under an old UID."""

from __future__ import annotations

import uuid

import httpx

from service.engine import Engine

CONFIG = {"tasks": {"t": {"after": ["go"], "run": "P"}}}


async def test_a_session_keeps_its_id_and_a_new_incarnation_gets_another(
    any_engine: Engine,
) -> None:
    uid = f"sid-{uuid.uuid4().hex[:8]}"
    await any_engine.configure(uid, CONFIG)
    first = (await any_engine.snapshot(uid)).sessionId
    assert isinstance(first, str) and first
    await any_engine.fire(uid, "go")
    claim = await any_engine.claim(uid, "t#0")
    assert claim.state == "claimed" and claim.sessionId == first
    assert (await any_engine.snapshot(uid)).sessionId == first  # changes keep it
    seen = {first}
    for _ in range(5):  # deleted and created again at once, over and over
        await any_engine.delete(uid)
        await any_engine.fire(uid, "go")
        again = (await any_engine.snapshot(uid)).sessionId
        assert again is not None and again not in seen
        seen.add(again)


async def test_get_session_shows_the_session_id(api: httpx.AsyncClient) -> None:
    uid = f"sid-{uuid.uuid4().hex[:8]}"
    assert (await api.put(f"/sessions/{uid}/config", json=CONFIG)).status_code == 200
    first = (await api.get(f"/sessions/{uid}")).json()["sessionId"]
    assert isinstance(first, str) and first
    assert (await api.delete(f"/sessions/{uid}")).status_code == 204
    assert (await api.put(f"/sessions/{uid}/config", json=CONFIG)).status_code == 200
    second = (await api.get(f"/sessions/{uid}")).json()["sessionId"]
    assert second != first
