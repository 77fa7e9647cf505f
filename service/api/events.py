"""A session's event log over HTTP: Server-Sent Events, or JSON pages for clients that cannot
stream; and the session index (``GET /sessions``) and the caller's key (``GET /auth/key``).

The stream sends the backlog after ``Last-Event-ID`` (or ``since``), then follows the log
(short polls on the shared pool, service/engine/events.py), in slices of at most a second so
that it notices a shutdown (``close_streams``) and a heartbeat is due. Each SSE message is one
event; its ``id`` is its change's id, so a reconnecting client resumes after the last change it
saw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from service.api.auth import SCOPES, ApiKey
from service.api.context import context
from service.api.params import Uid, problems
from service.engine.events import EventLog
from service.engine.index import SessionIndex

router = APIRouter(tags=["events"])

CURSOR = r"^\d{1,20}-\d{1,20}$"
SLICE_MS = 1000
"""Longest single wait for new entries: a stream notices shutdown within this long."""


class EventsPage(BaseModel):
    events: list[dict[str, Any]]
    next: str | None


class IndexedSessionView(BaseModel):
    uid: str
    updated: str
    finalized: bool


class SessionsPage(BaseModel):
    sessions: list[IndexedSessionView]
    next: str | None


class KeyView(BaseModel):
    name: str | None
    scopes: list[str]
    prefixes: list[str]
    auth: bool


def _key(request: Request) -> ApiKey | None:
    found: ApiKey | None = request.scope.get("state", {}).get("api_key")
    return found


def closing_event(app: FastAPI) -> asyncio.Event:
    """Set when the server shuts down: open streams end (``triggers serve`` sets it)."""
    event: asyncio.Event | None = getattr(app.state, "closing", None)
    if event is None:
        event = asyncio.Event()
        app.state.closing = event
    return event


def close_streams(app: Any) -> None:
    """Ends every open event stream of ``app`` (called when the server begins to shut down,
    before it waits for open connections, which a stream would otherwise hold forever)."""
    closing_event(app).set()


@router.get(
    "/sessions/{uid}/events",
    responses={
        200: {
            "description": "With Accept: text/event-stream (as EventSource sends), the live "
            "stream; otherwise one JSON page of events",
            "content": {"text/event-stream": {}, "application/json": {}},
            "model": EventsPage,
        },
        **problems(),
    },
    summary="The session's event log: live as Server-Sent Events, or paged JSON",
)
async def session_events(
    uid: Uid,
    request: Request,
    since: Annotated[str | None, Query(pattern=CURSOR, description="Events after this id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="JSON: events per page")] = 100,
    last_event_id: Annotated[str | None, Header(pattern=CURSOR)] = None,
    accept: Annotated[str, Header()] = "application/json",
) -> Any:
    ctx = context(request)
    log = EventLog(ctx.engine.client, ctx.engine.prefix)
    start = last_event_id or since
    if "text/event-stream" not in accept:
        page = await log.page(uid, start, limit)
        return EventsPage(events=page.events, next=page.next)
    closing = closing_event(request.app)
    heartbeat = ctx.settings.events_heartbeat
    return StreamingResponse(
        _stream(log, uid, start, closing, heartbeat),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _message(event: dict[str, Any]) -> bytes:
    head = f"id: {event['id']}\nevent: {event['type']}\ndata: ".encode()
    return head + orjson.dumps(event) + b"\n\n"


async def _stream(
    log: EventLog, uid: str, start: str | None, closing: asyncio.Event, heartbeat: float
) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    last = start
    while True:  # the backlog, a page at a time
        page = await log.page(uid, last, 500)
        for event in page.events:
            yield _message(event)
        last = page.last
        if page.next is None:
            break
    follower = log.follower(uid)
    try:
        quiet_since = time.monotonic()
        while not closing.is_set():
            found = await follower.wait(last, SLICE_MS)
            for event in found.events:
                yield _message(event)
            last = found.last
            if found.events:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= heartbeat:
                yield b": heartbeat\n\n"
                quiet_since = time.monotonic()
    finally:
        await follower.aclose()


@router.get(
    "/sessions",
    response_model=SessionsPage,
    responses=problems(),
    summary="Sessions, newest change first, within the caller's namespaces",
)
async def list_sessions(
    request: Request,
    prefix: Annotated[str, Query(max_length=200, description="Only UIDs starting so")] = "",
    status: Annotated[Literal["active", "finalized"] | None, Query()] = None,
    cursor: Annotated[
        str | None, Query(max_length=240, pattern=r"^\d{1,20}:.+$", description="next of a page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> SessionsPage:
    ctx = context(request)
    key = _key(request)
    index = SessionIndex(ctx.engine.client, ctx.engine.prefix)
    page = await index.page(
        allowed=key.prefixes if key else [], prefix=prefix, status=status, cursor=cursor,
        limit=limit,
    )  # fmt: skip
    return SessionsPage(
        sessions=[IndexedSessionView(uid=s.uid, updated=s.updated, finalized=s.finalized)
                  for s in page.sessions],
        next=page.next,
    )  # fmt: skip


@router.get(
    "/auth/key",
    response_model=KeyView,
    responses=problems(),
    summary="The presented API key's name, scopes and prefixes (what the inspector may show)",
)
async def current_key(request: Request) -> KeyView:
    key = _key(request)
    if key is None:
        enabled = context(request).auth.enabled
        scopes: list[str] = [] if enabled else list(SCOPES)  # auth on and no key presented: nothing
        return KeyView(name=None, scopes=scopes, prefixes=[], auth=enabled)
    return KeyView(name=key.name, scopes=list(key.scopes), prefixes=key.prefixes, auth=True)
