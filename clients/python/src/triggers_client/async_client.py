"""``AsyncClient``: the same methods as ``Client`` (client.py), awaited; keep the two in step.

The base URL and API key come from the arguments, else TRIGGERS_URL and TRIGGERS_API_KEY. With
``namespace="tenant-a:"`` every UID passed in is prefixed with it (answers show the full UID).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import httpx

from triggers_client._core import (
    Call,
    RetryPolicy,
    has_no_stream,
    problem_of,
    settings,
    should_retry,
    stream_headers,
    stream_timeout,
)
from triggers_client.calls import UNSET, Calls
from triggers_client.errors import TriggersConnectionError, WaitTimeout
from triggers_client.events import FINAL_EVENT, EventTracker, SseParser
from triggers_client.models import (
    Config,
    Delivery,
    Event,
    FireResult,
    Instance,
    ReplayResult,
    Session,
    Status,
    UnresolvedInstance,
    UnresolvedTask,
)

T = TypeVar("T")


class AsyncClient:
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        namespace: str = "",
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url, headers = settings(base_url, api_key)
        self.base_url = url
        self.calls = Calls(namespace)
        self.retry = retry or RetryPolicy()
        self.http = httpx.AsyncClient(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    def uid(self, uid: str) -> str:
        """The full UID of ``uid`` in this client's namespace."""
        return self.calls.uid(uid)

    async def _send(self, call: Call[T]) -> T:
        """Send, retrying an idempotent call on connection errors, 429, 503 (Retry-After)."""
        attempts = self.retry.attempts if call.idempotent else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await self.http.request(call.method, call.path, **call.request_kwargs())
            except httpx.TransportError as error:
                if last:
                    raise TriggersConnectionError(f"{call.method} {call.path}: {error}") from error
                await asyncio.sleep(self.retry.delay(attempt, None))
                continue
            if last or not should_retry(response):
                return call.answer(response)
            await asyncio.sleep(self.retry.delay(attempt, response))
        raise AssertionError("unreachable")

    async def configure(
        self, uid: str, config: Config | dict[str, Any], *, idempotency_key: str | None = None
    ) -> Config:
        """Merge tasks by name into the configuration (PATCH); creates the session."""
        return await self._send(self.calls.configure(uid, config, False, idempotency_key))

    async def replace_config(
        self, uid: str, config: Config | dict[str, Any], *, idempotency_key: str | None = None
    ) -> Config:
        """Replace the whole configuration (PUT)."""
        return await self._send(self.calls.configure(uid, config, True, idempotency_key))

    async def config(self, uid: str) -> Config:
        return await self._send(self.calls.config(uid))

    async def fire(
        self,
        uid: str,
        trigger: str,
        kwargs: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> FireResult:
        """Fire a trigger. The Idempotency-Key (generated, or yours to dedupe across processes)
        is the same on every retry, so a retried fire is recorded once."""
        return await self._send(self.calls.fire(uid, trigger, kwargs, idempotency_key))

    async def session(self, uid: str) -> Session:
        return await self._send(self.calls.session(uid))

    async def unresolved(self, uid: str) -> list[UnresolvedTask]:
        """Tasks with no instance yet or an unresolved one, each with ``waitingFor``."""
        return await self._send(self.calls.unresolved(uid))

    async def unresolved_instances(self, uid: str) -> list[UnresolvedInstance]:
        return await self._send(self.calls.unresolved_instances(uid))

    async def instances(
        self,
        uid: str,
        *,
        status: Status | None = None,
        task: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Instance]:
        """Every instance (optionally of one status or task), following ``next`` cursors."""
        cursor: str | None = None
        while True:
            page = await self._send(self.calls.instances_page(uid, status, task, cursor, page_size))
            for instance in page.instances:
                yield instance
            if not page.next:
                return
            cursor = page.next

    async def instance(self, uid: str, name: str) -> Instance:
        return await self._send(self.calls.instance(uid, name))

    async def replay(
        self, uid: str, name: str, kwargs: Any = UNSET, *, idempotency_key: str | None = None
    ) -> ReplayResult:
        """Replay a failed instance; ``kwargs`` left out: the same kwargs, ``{}``: none."""
        return await self._send(self.calls.replay(uid, name, kwargs, idempotency_key))

    async def skip(
        self,
        uid: str,
        name: str,
        *,
        cascade: bool = False,
        result: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Instance:
        return await self._send(self.calls.skip(uid, name, cascade, result, idempotency_key))

    async def set_status(
        self,
        uid: str,
        name: str,
        status: Status,
        *,
        metadata: dict[str, Any] | None = None,
        cascade: bool = False,
        cascade_kwargs: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Instance:
        """Report an ``external`` runner's outcome (or an operator's decision)."""
        call = self.calls.set_status(
            uid, name, status, metadata, cascade, cascade_kwargs, idempotency_key
        )
        return await self._send(call)

    async def delete(self, uid: str) -> None:
        await self._send(self.calls.delete(uid))

    async def deliveries(self, uid: str) -> list[Delivery]:
        """Every webhook delivery of the session, with every attempt."""
        return await self._send(self.calls.deliveries(uid))

    async def redeliver(
        self, uid: str, delivery_id: str, *, idempotency_key: str | None = None
    ) -> None:
        """Deliver again (same webhook-id), whatever happened before."""
        await self._send(self.calls.redeliver(uid, delivery_id, idempotency_key))

    async def events(
        self,
        uid: str,
        *,
        since: str | None = None,
        timeout: float | None = None,
        poll_interval: float = 0.5,
    ) -> AsyncIterator[Event]:
        """The session's changes from its event stream (Server-Sent Events), ending with
        ``finalized``; ``since``: resume after that event id. A dropped connection is resumed
        with Last-Event-ID; WaitTimeout past ``timeout`` seconds. A service without the stream
        is polled instead (``poll_events``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        parser = SseParser()
        parser.last_id = since
        failures = 0
        while True:
            try:
                async with self.http.stream(
                    "GET", self.calls.events_path(uid), headers=stream_headers(parser.last_id),
                    timeout=stream_timeout(deadline, self.http.timeout.connect),
                ) as response:  # fmt: skip
                    if response.status_code >= 400:
                        await response.aread()
                        if has_no_stream(response):
                            async for polled in self.poll_events(
                                uid, poll_interval=poll_interval, timeout=timeout
                            ):
                                yield polled
                            return
                        raise problem_of(response)
                    failures = 0
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            yield event
                            if event.event == FINAL_EVENT:
                                return
            except httpx.TransportError as error:
                past = deadline is not None and time.monotonic() >= deadline
                if not past and not isinstance(error, httpx.ReadTimeout):
                    failures += 1
                    if failures >= self.retry.attempts:
                        raise TriggersConnectionError(
                            f"events of {self.uid(uid)}: {error}"
                        ) from error
                    await asyncio.sleep(self.retry.delay(failures - 1, None))
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"session {self.uid(uid)} not finalized within {timeout} s")

    async def poll_events(
        self, uid: str, *, poll_interval: float = 0.5, timeout: float | None = None
    ) -> AsyncIterator[Event]:
        """The session's changes derived by polling GET /sessions/{uid} (see events.py),
        ending with ``finalized``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        tracker = EventTracker()
        while True:
            for event in tracker.changes(await self.session(uid)):
                yield event
            if tracker.finalized:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"session {self.uid(uid)} not finalized within {timeout} s")
            await asyncio.sleep(poll_interval)

    async def wait_finalized(
        self, uid: str, timeout: float = 60.0, *, poll_interval: float = 0.2
    ) -> Session:
        """The session once it is finalized; WaitTimeout past ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            session = await self.session(uid)
            if session.finalized:
                return session
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"session {self.uid(uid)} not finalized within {timeout} s")
            await asyncio.sleep(poll_interval)
