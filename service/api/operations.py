"""What operators read: ``/metrics`` (Prometheus), ``/livez`` and ``/healthz/workers`` (the HTTP
request metrics are recorded by the front layer, service/api/front.py).

The deployment-wide gauges (broker queue depths, the pending index, live workers) are read
when Prometheus scrapes, one cheap read each, in the API only: every API replica reports the
same figures (take ``max`` in PromQL), and worker processes export only what they did.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import metrics
from service.api.context import context
from service.api.schemas import Health
from service.engine import Engine
from service.heartbeat import count_alive
from service.worker.broker import QUEUE

router = APIRouter(tags=["operations"])


def queue_depths(broker: Any) -> dict[str, int]:
    """Messages in the broker's queue by state, from the broker itself (synchronous)."""
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.common import dq_name, xq_name

    if isinstance(broker, RedisBroker):
        client, space = broker.client, broker.namespace
        return {
            "ready": int(client.llen(f"{space}:{QUEUE}")),
            "delayed": int(client.llen(f"{space}:{dq_name(QUEUE)}")),
            "dead-lettered": int(client.zcard(f"{space}:{xq_name(QUEUE)}")),
        }
    ready, delayed, dead = broker.get_queue_message_counts(QUEUE)  # RabbitMQ
    return {"ready": int(ready), "delayed": int(delayed), "dead-lettered": int(dead)}


async def refresh_deployment_gauges(engine: Engine, broker: Any, prefix: str) -> None:
    """Set the gauges read at scrape time: O(1) or O(log n) reads, never a keyspace scan."""
    now_ms = int(time.time() * 1000)
    metrics.OUTBOX_PENDING.set(await engine.client.zcard(engine.pending_key))
    metrics.OUTBOX_OVERDUE.set(await engine.client.zcount(engine.pending_key, "-inf", now_ms))
    metrics.WORKERS_ALIVE.set(await count_alive(engine.client, prefix))
    await refresh_redis_memory(engine)
    depths = await asyncio.to_thread(queue_depths, broker)
    for state, count in depths.items():
        metrics.QUEUE_MESSAGES.labels(QUEUE, state).set(count)


async def refresh_redis_memory(engine: Engine) -> None:
    """Redis' memory against its limit (a cluster: the node with the least headroom)."""
    memory: Any = await engine.client.info("memory")
    nodes = [memory] if "used_memory" in memory else list(memory.values())
    worst = max(nodes, key=lambda n: int(n["used_memory"]) / max(int(n["maxmemory"]), 1))
    metrics.REDIS_MEMORY_USED.set(int(worst["used_memory"]))
    metrics.REDIS_MEMORY_MAX.set(int(worst["maxmemory"]))


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    ctx = context(request)
    await refresh_deployment_gauges(ctx.engine, request.app.state.broker, ctx.settings.key_prefix)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/livez", response_model=Health, summary="The process runs (no I/O)")
async def livez() -> Health:
    return Health(status="ok")


@router.get("/healthz/workers", response_model=Health, summary="How many workers are alive")
async def workers(request: Request) -> Health:
    ctx = context(request)
    alive = await count_alive(ctx.engine.client, ctx.settings.key_prefix)
    return Health(status="ok" if alive else "no worker alive", checks={"alive": str(alive)})
