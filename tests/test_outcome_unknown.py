"""A Redis failure after a change was sent is never answered as "safe to retry" (issue 14 item 1).

The change may have been applied (the script ran, the answer was lost), so the API answers the
distinct problem ``outcome-unknown`` without Retry-After; a failure before anything was sent
(Redis refusing connections) and any failed read stay 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import redis

from service.redis_server import RedisServer
from tests.conftest import LiveServer, api_settings


def _stall_then_kill(server: RedisServer, started: threading.Event) -> None:
    """Block Redis (DEBUG SLEEP) so the API's next command is sent but never answered."""
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=30)
    started.set()
    try:
        client.execute_command("DEBUG", "SLEEP", "30")  # type: ignore[no-untyped-call]
    except redis.ConnectionError:
        pass  # the server is killed while it sleeps
    finally:
        client.close()


async def _wait_until_sent(server: RedisServer) -> None:
    """Give the API's request time to reach the sleeping Redis (generous on a loaded box)."""
    await asyncio.sleep(1.5)
    assert server.process is not None
    server.process.kill()
    server.process.wait(30)


async def test_change_whose_redis_call_was_lost_is_outcome_unknown() -> None:
    with RedisServer() as server, LiveServer(api_settings(server.url)) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as api:
            config = {"tasks": {"t": {"after": ["go"], "run": "P"}}}
            assert (await api.put("/sessions/u:1/config", json=config)).status_code == 200
            started = threading.Event()
            sleeper = threading.Thread(target=_stall_then_kill, args=(server, started))
            sleeper.start()
            assert started.wait(30)
            time.sleep(0.2)  # DEBUG SLEEP is running: Redis answers nothing meanwhile
            fire = asyncio.create_task(api.post("/sessions/u:1/fire", json={"trigger": "go"}))
            await _wait_until_sent(server)
            answer = await fire
            sleeper.join(30)
            assert answer.status_code == 500, answer.text
            problem = answer.json()
            assert problem["type"] == "/problems/outcome-unknown"
            assert "Retry-After" not in answer.headers
            assert "Idempotency-Key" in problem["detail"]

            # Redis is gone: nothing can be sent, so retrying is safe (503 + Retry-After).
            refused = await api.post("/sessions/u:1/fire", json={"trigger": "go"})
            assert refused.status_code == 503, refused.text
            assert refused.json()["type"] == "/problems/unavailable"
            assert refused.headers["Retry-After"] == "1"
            read = await api.get("/sessions/u:1")
            assert read.status_code == 503
            assert read.headers["Retry-After"] == "1"
