"""Session events: the service's event stream, or polling where a service has none.

``events()`` reads GET /sessions/{uid}/events as Server-Sent Events (``SseParser`` below): every
change the session's event log records, in order (``fired``, ``created``, ``scheduled``,
``claimed``, ``finished``, ``failed``, ..., ``finalized``, last; the iteration ends there), each
with its stream ``id``; a dropped connection is resumed with ``Last-Event-ID``, so nothing is
missed or repeated.

``poll_events()`` (and ``events()`` against a service without the stream) polls GET
/sessions/{uid} instead and derives events from what changed between two polls: ``fired`` (a
trigger's latest kwargs appeared or changed), ``instance<Status>`` (``instanceScheduled``,
``instanceFinished``, ...) and ``finalized``. Polling sees states, not every step: a trigger
fired twice between two polls with the same kwargs, or an instance passing through ``running``
quickly, yields one event or none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from triggers_client.models import Event, Session


class EventTracker:
    """What was seen so far, and the events a newer snapshot of the session adds."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}
        self.statuses: dict[str, str] = {}
        self.finalized = False

    def changes(self, session: Session) -> Iterator[Event]:
        for trigger, kwargs in session.latestKwargs.items():
            if trigger not in self.kwargs or self.kwargs[trigger] != kwargs:
                self.kwargs[trigger] = kwargs
                yield Event(event="fired", data={"trigger": trigger, "kwargs": kwargs})
        for name, instance in session.instances.items():
            if self.statuses.get(name) != instance.status:
                self.statuses[name] = instance.status
                kind = "instance" + instance.status.capitalize()
                yield Event(event=kind, data=instance.model_dump(mode="json"))
        if session.finalized and not self.finalized:
            self.finalized = True
            yield Event(event="finalized", data={"finalizedAt": session.finalizedAt})


FINAL_EVENT = "finalized"


class SseParser:
    """Server-Sent Events from text lines (the WHATWG event-stream format): ``id``, ``event``
    and ``data`` fields, a blank line ends an event, ``:`` lines are comments (heartbeats)."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        """The event this line completes, if any."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            self.last_id = value
        elif field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        return None

    def _dispatch(self) -> Event | None:
        if not self._data:
            self._event = "message"
            return None
        raw, kind = "\n".join(self._data), self._event
        self._data, self._event = [], "message"
        try:
            data = json.loads(raw)
        except ValueError:
            data = {"raw": raw}
        if not isinstance(data, dict):
            data = {"value": data}
        return Event(event=kind, data=data, id=self.last_id)
