"""API benchmark: fire requests per second through the real server, against the stack's limit.

One uvicorn process (uvloop, httptools) serves the real app plus one extra route,
``POST /bench/noop``, that does exactly one EVALSHA of a no-op Lua script: the cheapest request
that still crosses FastAPI, pydantic, redis-py and Redis, i.e. the limit of this stack. A second
one, ``POST /bench/floor``, does that EVALSHA and enqueues one Dramatiq message (to an actor
nothing consumes, through the batched sender fires use, service/worker/runners.py): what any
request that schedules work must do at least (bench/fire_wrk.py compares fires with both). The same
load generator (bench/loadgen.py, N keep-alive connections) drives each endpoint in turn for the
same time; the script prints requests per second, p50 and p99 latency, and the ratio.

Goal (issue "REST API"): fire at 0.85 or more of the limit.
Run: ``.venv/bin/python bench/api.py [--seconds 10] [--connections 32]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import dramatiq
import httpx
import orjson
from fastapi import Request
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import LoadResult, encode_request, run_load
from service.redis_server import RedisServer, free_port
from service.worker.runners import ActorSender

UID = "bench:api"


class NoopBody(BaseModel):
    trigger: str


class NoopAnswer(BaseModel):
    ok: int


def serve(redis_url: str, port: int, noop_last: bool = False) -> None:
    """Child process: the real app with the no-op route added, in one uvicorn worker. The
    no-op route is matched first, as in a bare FastAPI app with that one route: FastAPI 0.165
    tries an app's routes (each included router's, twice) in order, and the last route of this
    app pays about 30 failed matches more than the first (``--noop-last``: as before, at the
    end, which flattered the ratio)."""
    import uvicorn

    from service.api.app import create_app
    from service.settings import Settings

    app = create_app(Settings(redis_url=redis_url, auth="off", key_prefix="bench"))
    app_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[None]:
        async with app_lifespan(app):
            app.state.noop_sha = await app.state.context.engine.client.script_load("return 1")
            app.state.floor_actor = dramatiq.actor(  # type: ignore[call-overload]
                _floor_task, broker=app.state.broker, actor_name="bench_floor",
                queue_name="bench-floor",
            )  # fmt: skip
            yield

    app.router.lifespan_context = lifespan

    @app.post("/bench/noop", response_model=NoopAnswer)
    async def noop(body: NoopBody, request: Request) -> NoopAnswer:
        client = request.app.state.context.engine.client
        sha = request.app.state.noop_sha
        return NoopAnswer(ok=await client.evalsha(sha, 1, "{bench}:noop", body.trigger))

    sender = ActorSender()

    @app.post("/bench/floor", response_model=NoopAnswer)
    async def floor(body: NoopBody, request: Request) -> NoopAnswer:
        """One EVALSHA, then one message of the size of a fire's (a UID and an instance name)
        queued for the next batch, as a fire's hand-over does."""
        state = request.app.state
        ok = await state.context.engine.client.evalsha(
            state.noop_sha, 1, "{bench}:noop", body.trigger
        )
        await sender.send(state.floor_actor, ("bench:floor", f"{body.trigger}#0"), 0)
        return NoopAnswer(ok=ok)

    if not noop_last:  # the no-op route first, the floor's next
        floor_route, noop_route = app.router.routes.pop(), app.router.routes.pop()
        app.router.routes[0:0] = [noop_route, floor_route]

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)  # fmt: skip


def _floor_task(uid: str, name: str) -> None:
    """The floor route's actor: never run (nothing consumes its queue)."""


def wait_ready(
    port: int, *, seconds: float = 30, child: subprocess.Popen[bytes] | None = None
) -> None:
    """Until the bench server on ``port`` answers /readyz (every bench that serves the app
    waits with this); ``child``: its process, whose exit ends the wait at once."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            raise RuntimeError("the bench server exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the bench server did not start")


def report(name: str, result: LoadResult) -> None:
    if result.errors:
        print(f"{name}: {result.errors} errors, statuses {result.statuses}")
    print(
        f"{name:<18} {result.rate:>10.0f} {result.percentile(0.5):>9.2f} "
        f"{result.percentile(0.99):>9.2f} {result.errors:>7}"
    )


async def measure(
    port: int, seconds: float, connections: int, rounds: int, noop_last: bool
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        config = {"tasks": {"t_page": {"after": ["applicant"], "andEvery": "page", "run": "P"}}}
        await client.put(f"/sessions/{UID}/config", json=config)
        await client.post(f"/sessions/{UID}/fire", json={"trigger": "applicant"})
    body = orjson.dumps({"trigger": "page", "kwargs": {"page": 3, "responses": {"q1": "yes"}}})
    fire = encode_request("POST", f"/sessions/{UID}/fire", body)
    noop = encode_request("POST", "/bench/noop", orjson.dumps({"trigger": "page"}))
    await run_load("127.0.0.1", port, noop, connections=connections, seconds=2)  # warm-up
    runs: dict[str, list[LoadResult]] = {"noop EVALSHA": [], "fire": []}
    for _ in range(rounds):  # alternate, so drifts of the machine hit both alike
        for name, request in (("noop EVALSHA", noop), ("fire", fire)):
            runs[name].append(
                await run_load("127.0.0.1", port, request, connections=connections,
                               seconds=seconds / rounds)
            )  # fmt: skip
    print(f"{'endpoint':<18} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}")
    for name, results in runs.items():
        report(name, merge(results))
    ratios = [f.rate / n.rate for f, n in zip(runs["fire"], runs["noop EVALSHA"], strict=True)]
    print(f"\nfire / limit per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"fire / limit (median of {rounds} alternating rounds): "
          f"{statistics.median(ratios):.2f} (goal >= 0.85); {connections} connections, "
          f"{seconds:.0f} s per endpoint, one uvicorn worker, no-op route matched "
          f"{'last' if noop_last else 'first'}")  # fmt: skip


def merge(results: list[LoadResult]) -> LoadResult:
    merged = LoadResult()
    for result in results:
        merged.requests += result.requests
        merged.errors += result.errors
        merged.seconds += result.seconds
        merged.latencies_ms.extend(result.latencies_ms)
        for status, count in result.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + count
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10, help="per endpoint, in all")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--noop-last", action="store_true", help="match the no-op route last")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.noop_last)
        return
    with ExitStack() as stack:
        url = os.environ.get("TRIGGERS_REDIS_URL") or stack.enter_context(RedisServer()).url
        port = free_port()
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", url, "--port", str(port)]
            + (["--noop-last"] if args.noop_last else []),
        )
        stack.callback(child.wait)
        stack.callback(child.terminate)
        wait_ready(port)
        asyncio.run(measure(port, args.seconds, args.connections, args.rounds, args.noop_last))


if __name__ == "__main__":
    main()
