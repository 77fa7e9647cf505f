"""Managers, storages and runners are looked up by key in registries filled from entry points."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
