"""Registries of managers, storages and runners, keyed by name and filled from entry points.

An operator picks an implementation by key in settings (``TRIGGERS_MANAGER=finalizing``) and a
plug-in package adds new ones by declaring an entry point in its own metadata, without touching
the service (DESIGN.md section 3; the original used ClassRegistry for the same purpose, and
phx-class-registry is its maintained successor). Groups: ``triggers.managers``,
``triggers.storages``, ``triggers.runners``.
"""

from __future__ import annotations

from typing import Any

from class_registry.entry_points import EntryPointClassRegistry

MANAGERS_GROUP = "triggers.managers"
STORAGES_GROUP = "triggers.storages"
RUNNERS_GROUP = "triggers.runners"

managers: EntryPointClassRegistry[Any] = EntryPointClassRegistry(MANAGERS_GROUP)
storages: EntryPointClassRegistry[Any] = EntryPointClassRegistry(STORAGES_GROUP)
runners: EntryPointClassRegistry[Any] = EntryPointClassRegistry(RUNNERS_GROUP)
