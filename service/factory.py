"""Builds the engine and the manager the settings name (registries keyed by name, L3)."""

from __future__ import annotations

from service import tracing
from service.engine import Engine
from service.managers import Manager
from service.registry import lookup, lookup_class, managers, storages
from service.settings import Settings


def build_manager(settings: Settings) -> Manager:
    """The manager registered under ``TRIGGERS_MANAGER`` (entry point group triggers.managers)."""
    manager = lookup(managers, settings.manager)
    if not isinstance(manager, Manager):
        raise TypeError(f"manager {settings.manager!r} is not a service.managers.Manager")
    return manager


def build_engine(settings: Settings, url: str, manager: Manager | None = None) -> Engine:
    """An engine on ``url`` configured as the settings and the manager say."""
    manager = manager or build_manager(settings)
    storage: type[Engine] = lookup_class(storages, settings.storage)
    engine = storage.from_url(
        url,
        cluster=settings.redis_cluster,
        prefix=settings.key_prefix,
        finalize=manager.finalize,
        session_ttl=settings.session_ttl or 0,
        lease_ms=int(settings.lease_seconds * 1000),
        sweep_grace_ms=int(settings.sweep_grace * 1000),
    )
    tracing.instrument_redis(engine.client)  # when OTEL_EXPORTER_OTLP_ENDPOINT is set
    return engine
