"""Session events by polling GET /sessions/{uid}.

The API's event stream (GET /sessions/{uid}/events, Server-Sent Events) does not exist in the
service yet; until it does, ``events()`` polls the session and derives the same kinds of events
from what changed between two polls: ``fired`` (a trigger's latest kwargs appeared or changed),
``instance<Status>`` (an instance appeared or changed status: ``instanceScheduled``,
``instanceFinished``, ``instanceFailed``, ...) and ``finalized`` (last; the iteration ends).
Polling sees states, not every step: a trigger fired twice between two polls with the same
kwargs, or an instance passing through ``running`` quickly, yields one event or none.
"""

from __future__ import annotations

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
