"""Registries of managers, storages and runners, keyed by name and filled from entry points.

An operator picks an implementation by key in settings (``TRIGGERS_MANAGER=finalizing``) and a
plug-in package adds new ones by declaring an entry point in its own metadata, without touching
the service (DESIGN.md section 3; the original used ClassRegistry for the same purpose, and
phx-class-registry is its maintained successor). Groups: ``triggers.managers``,
``triggers.storages``, ``triggers.runners``.
"""

from __future__ import annotations

import threading
from typing import Any

from class_registry.entry_points import EntryPointClassRegistry

MANAGERS_GROUP = "triggers.managers"
STORAGES_GROUP = "triggers.storages"
RUNNERS_GROUP = "triggers.runners"

managers: EntryPointClassRegistry[Any] = EntryPointClassRegistry(MANAGERS_GROUP)
storages: EntryPointClassRegistry[Any] = EntryPointClassRegistry(STORAGES_GROUP)
runners: EntryPointClassRegistry[Any] = EntryPointClassRegistry(RUNNERS_GROUP)

# The registries read their entry points lazily, and that first read is not thread-safe (two
# worker threads building one registry at once saw an empty table, a KeyError): every lookup
# goes through this lock. (Reading them at import instead would import the runners' modules,
# which import this one.)
_lock = threading.Lock()


def lookup(registry: EntryPointClassRegistry[Any], key: str) -> Any:
    """A new instance of what ``registry`` holds under ``key`` (LookupError if nothing)."""
    with _lock:
        return registry.get(key)


def lookup_class(registry: EntryPointClassRegistry[Any], key: str) -> Any:
    """The class ``registry`` holds under ``key``, not an instance (LookupError if nothing).
    A cold registry's first read fills it from entry points: without the lock, threads that
    arrive meanwhile see a half-filled table (the sweeper thread and the first message of a
    fresh worker process raced here)."""
    with _lock:
        return registry.get_class(key)


def all_of(registry: EntryPointClassRegistry[Any]) -> dict[str, Any]:
    """An instance of everything in ``registry``, by key."""
    with _lock:
        return {str(key): registry.get(key) for key in list(registry.keys())}
