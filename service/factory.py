"""Builds the engine and the manager the settings name (registries keyed by name, L3)."""

from __future__ import annotations

from pydantic import TypeAdapter

from service import tracing
from service.engine import Engine, Subscription
from service.engine.limits import Limits
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
        max_connections=settings.redis_max_connections,
        pool_timeout=settings.redis_pool_timeout,
        prefix=settings.key_prefix,
        finalize=manager.finalize,
        session_ttl=settings.session_ttl or 0,
        lease_ms=int(settings.lease_seconds * 1000),
        sweep_grace_ms=int(settings.sweep_grace * 1000),
        limits=limits_of(settings),
        event_log_cap=settings.event_log_max,
        page_size=settings.page_size,
        event_kinds=global_event_kinds(settings.webhooks),
    )
    tracing.instrument_redis(engine.client)  # when OTEL_EXPORTER_OTLP_ENDPOINT is set
    return engine


def global_event_kinds(webhooks: str | None) -> str:
    """The event kinds the global subscriptions (TRIGGERS_WEBHOOKS, validated JSON) hear, as
    the scripts take them: comma-separated, "*" for every kind, "" for none."""
    hooks = TypeAdapter(list[Subscription]).validate_json(webhooks or "[]")
    kinds = {kind for hook in hooks for kind in hook.events}
    return "*" if "*" in kinds else ",".join(sorted(kinds))


def limits_of(settings: Settings) -> Limits:
    """The engine's size limits from the TRIGGERS_MAX_... settings."""
    return Limits(
        max_tasks=settings.max_tasks,
        max_triggers_per_list=settings.max_triggers_per_list,
        max_tasks_per_trigger=settings.max_tasks_per_trigger,
        max_instances=settings.max_instances,
        max_open_instances=settings.max_open_instances,
    )
