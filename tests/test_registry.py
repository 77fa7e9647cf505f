"""Managers, storages and runners are looked up by key in registries filled from entry points."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from class_registry.entry_points import EntryPointClassRegistry

from service.engine import Engine
from service.factory import build_engine, build_manager
from service.managers import DefaultManager, FinalizingManager
from service.registry import MANAGERS_GROUP, managers, storages
from service.settings import Settings
from tests.support import installed_plugin

PLUGIN = """
from service.managers import Manager


class AuditManager(Manager):
    key = "audit"
    finalize = True
"""


@pytest.fixture
def plugin_on_path(tmp_path: Path) -> Iterator[None]:
    entry = "audit = audit_plugin:AuditManager"
    with installed_plugin(tmp_path, "audit_plugin", PLUGIN, MANAGERS_GROUP, entry):
        yield


def test_builtin_managers_and_storage_are_registered() -> None:
    assert managers.get_class("default") is DefaultManager
    assert managers.get_class("finalizing") is FinalizingManager
    assert storages.get_class("redis") is Engine


def test_settings_select_the_manager_by_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGERS_MANAGER", "default")
    manager = build_manager(Settings())
    assert isinstance(manager, DefaultManager) and not manager.finalize
    monkeypatch.delenv("TRIGGERS_MANAGER")
    assert isinstance(build_manager(Settings()), FinalizingManager)


def test_plugin_manager_is_found_through_its_entry_point(plugin_on_path: None) -> None:
    registry: EntryPointClassRegistry[object] = EntryPointClassRegistry(MANAGERS_GROUP)
    manager = registry.get("audit")
    assert type(manager).__name__ == "AuditManager"


def test_unknown_manager_key_is_an_error() -> None:
    with pytest.raises(LookupError):
        build_manager(Settings(manager="nope"))


async def test_engine_follows_the_manager(redis_url: str) -> None:
    engine = build_engine(Settings(manager="default", session_ttl=60), redis_url)
    assert engine.finalize is False and engine.session_ttl == 60
    await engine.configure("ttl:1", {"tasks": {"t": {"after": ["a"], "run": "P"}}})
    ttl = await engine.client.ttl(f"{engine.prefix}:{{ttl:1}}:meta")
    assert 0 < ttl <= 60
    await engine.delete("ttl:1")
    await engine.aclose()


def test_concurrent_first_lookups_all_find_the_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (found by the container test): a worker restarted with work waiting builds
    engines on several threads at once (the sweeper, the first messages). build_engine read the
    storage registry outside the registry lock, and the registry's first read is not
    thread-safe: one thread saw a half-filled table and failed with RegistryKeyError('redis'),
    and the message was lost. Entry points are read slowly here to widen that window."""
    import class_registry.entry_points as module

    real = module.entry_points

    def slow_entry_points(**kwargs: Any) -> Iterator[Any]:
        for entry in real(**kwargs):
            time.sleep(0.02)
            yield entry

    monkeypatch.setattr(module, "entry_points", slow_entry_points)
    storages.refresh()
    managers.refresh()
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def build() -> None:
        barrier.wait()
        try:
            build_engine(Settings(), "redis://127.0.0.1:1/0")
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    monkeypatch.undo()
    storages.refresh()
    managers.refresh()
    assert errors == []
