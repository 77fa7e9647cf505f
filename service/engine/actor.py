"""Who is making the current change: the API key's name, recorded in the session's event log.

A context variable rather than a parameter of every engine method: the request gate knows the
key before routing, and every change made while handling that request (the fire, its cascade,
the finalization) is the operator's. Workers and the sweeper leave it empty.
"""

from __future__ import annotations

from contextvars import ContextVar

ACTOR: ContextVar[str] = ContextVar("triggers_actor", default="")
