"""pytest plugin (entry point ``pytest11``), loaded when triggers-client is installed.

Fixtures:

* ``triggers_service`` (session): a real ``triggers serve`` (embedded Redis, API, in-process
  worker) on a free loopback port, auth off, loopback outbound calls allowed, its own data dir.
  Override ``triggers_service_env`` (session scope) to add settings.
* ``triggers``: a ``Client`` bound to it, with a fresh UID namespace per test
  (``triggers.uid("x")`` is the full UID).
* ``webhook_receiver``: a loopback server recording signed deliveries (``.url``,
  ``.wait_for_event(...)``, ``.events``).
* ``task_endpoint``: a loopback server answering HTTP tasks as programmed (``.url(path)``,
  ``.answer(path, status, body, headers)``, ``.calls(path)``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from triggers_client.client import Client
from triggers_client.testing import EmbeddedService, TaskEndpoint, WebhookReceiver


@pytest.fixture(scope="session")
def triggers_service_env() -> dict[str, str]:
    """Extra TRIGGERS_* settings of the embedded service (override in a conftest)."""
    return {}


@pytest.fixture(scope="session")
def triggers_service(
    tmp_path_factory: pytest.TempPathFactory, triggers_service_env: dict[str, str]
) -> Iterator[EmbeddedService]:
    data_dir: Path = tmp_path_factory.mktemp("triggers")
    with EmbeddedService(data_dir, triggers_service_env) as service:
        yield service


@pytest.fixture
def triggers(triggers_service: EmbeddedService) -> Iterator[Client]:
    namespace = f"test-{uuid.uuid4().hex[:12]}:"
    with Client(triggers_service.url, api_key="", namespace=namespace) as client:
        yield client


@pytest.fixture
def webhook_receiver(triggers_service: EmbeddedService) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(triggers_service.webhook_secret)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def task_endpoint(triggers_service: EmbeddedService) -> Iterator[TaskEndpoint]:
    endpoint = TaskEndpoint(triggers_service.webhook_secret)
    endpoint.start()
    try:
        yield endpoint
    finally:
        endpoint.stop()
