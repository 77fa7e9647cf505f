"""What metrics and logs cost: fire requests per second with them on and off, side by side.

Several uvicorn processes (uvloop, httptools) serve the real app on the same Redis, one per
mode (``--modes``):

* **on**: as deployed by default: Prometheus metrics recorded (fires, Lua script timings, HTTP
  requests by route), ``X-Request-ID`` and context binding, structured JSON logs at INFO
  through structlog (written to /dev/null), no access log (``TRIGGERS_ACCESS_LOG`` is off);
* **metrics**: metrics recorded and request context bound, logs at WARNING;
* **access**: as **on** with ``TRIGGERS_ACCESS_LOG=true`` (one JSON line per request);
* **off**: the same app with the front layer's request ID, context and request metrics left
  out (``Unobserved``), metric recording replaced by no-ops and logging at WARNING.

The same load generator (bench/loadgen.py) drives each in alternating rounds for the same
time, so drifts of the machine hit both alike; the script prints requests per second, p50 and
p99 latency, and the server's CPU time per request (from /proc: on a shared, loaded machine
throughput swings with the neighbours, CPU time per request much less). The overhead is the
ratio of CPU time per request. Goal (issue 10): overhead under 5 %.
Run: ``.venv/bin/python bench/observability.py [--seconds 10] [--connections 32]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import merge, report, wait_ready
from bench.loadgen import LoadResult, encode_request, run_load
from service.redis_server import RedisServer, free_port

UID = "bench:obs"


def switch_off() -> None:
    """Metric recording on the fire path becomes a no-op (bench only)."""
    from service import metrics
    from service.engine import scripts

    metrics.count_fire = lambda scheduled: None
    metrics.count_refused_fire = lambda: None
    scripts.observe_script = lambda script, seconds: None  # type: ignore[attr-defined]


def unobserved_front() -> Any:
    """The front layer without its observability: no request ID, no log context, no request
    metrics; the gate and the body's limits as deployed (bench only)."""
    from starlette.types import Receive, Scope, Send

    from service.api.fast_fire import JSON
    from service.api.front import Exchange, Front

    class Unobserved(Front):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            headers = dict(scope["headers"])
            exchange = Exchange(self, receive, send, b"-")
            simple = headers.get(b"content-type") == JSON and b"idempotency-key" not in headers
            await self.serve(scope, exchange, headers.get(b"authorization"),
                             headers.get(b"content-length"), simple)  # fmt: skip

    return Unobserved


def serve(redis_url: str, port: int, mode: str) -> None:
    """Child process: the real app, instrumented (``on``, ``access``), metrics only, or not
    (``off``)."""
    import uvicorn
    from starlette.middleware import Middleware

    from service.api.app import create_app
    from service.api.front import Front
    from service.logs import configure
    from service.settings import Settings

    settings = Settings(redis_url=redis_url, auth="off", key_prefix="bench-obs",
                        access_log=mode == "access")  # fmt: skip
    logs_on = mode in ("on", "access")
    if logs_on:
        configure(logging.INFO, "json")
    else:
        logging.basicConfig(level=logging.WARNING)
    if mode == "off":
        switch_off()
    app = create_app(settings)
    if mode == "off":
        front: Any = Front  # Middleware's cls is typed as a factory, not a class
        app.user_middleware = [
            Middleware(unobserved_front(), *m.args, **m.kwargs) if m.cls is front else m
            for m in app.user_middleware
        ]
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="info" if logs_on else "warning", access_log=settings.access_log,
                log_config=None)  # fmt: skip


def isolated_costs(rounds: int = 50_000) -> dict[str, float]:
    """Microseconds per request of each piece on its own, in this process (steadier than the
    side-by-side figure when the machine is shared): the metrics a fire records, the request
    ID and context binding, and one JSON access-log line written to /dev/null."""
    import timeit

    from service import metrics
    from service.logs import bound_contextvars, configure, request_context, reset_context

    configure(logging.INFO, "json")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 (lives as long as the process)
    access = logging.getLogger("uvicorn.access")

    def record_metrics() -> None:
        metrics.observe_request("POST", "/sessions/{uid}/fire", 200, 0.003)
        metrics.count_fire(True)
        metrics.observe_script("fire", 0.001)

    def bind_context() -> None:
        reset_context(request_context({"request_id": "caf839519c284784af7b891f5bc9a70e",
                                       "uid": UID}))  # fmt: skip

    def access_line() -> None:
        with bound_contextvars(request_id="caf839519c284784af7b891f5bc9a70e", uid=UID):
            access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST",
                        f"/sessions/{UID}/fire", "1.1", 200)  # fmt: skip

    pieces = {"metrics": record_metrics, "context": bind_context, "JSON log line": access_line}
    return {name: timeit.timeit(piece, number=rounds) / rounds * 1e6
            for name, piece in pieces.items()}  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    ports: dict[str, int], pids: dict[str, int], seconds: float, connections: int, rounds: int
) -> None:
    config = {"tasks": {"t_page": {"after": ["applicant"], "andEvery": "page", "run": "P"}}}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['on']}") as client:
        await client.put(f"/sessions/{UID}/config", json=config)
        await client.post(f"/sessions/{UID}/fire", json={"trigger": "applicant"})
    body = orjson.dumps({"trigger": "page", "kwargs": {"page": 3, "responses": {"q1": "yes"}}})
    fire = encode_request("POST", f"/sessions/{UID}/fire", body)
    for port in ports.values():  # warm-up
        await run_load("127.0.0.1", port, fire, connections=connections, seconds=2)
    runs: dict[str, list[LoadResult]] = {mode: [] for mode in ports}
    cpu: dict[str, list[float]] = {mode: [] for mode in ports}  # ms per request, per round
    for _ in range(rounds):
        for mode, port in ports.items():
            before = cpu_seconds(pids[mode])
            result = await run_load("127.0.0.1", port, fire, connections=connections,
                                    seconds=seconds / rounds)  # fmt: skip
            cpu[mode].append((cpu_seconds(pids[mode]) - before) * 1000 / max(result.requests, 1))
            runs[mode].append(result)
    print(f"{'fire, observability':<18} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}")
    for mode, results in runs.items():
        report(mode, merge(results))
    print()
    for mode in ports:
        print(f"{mode:<8} server CPU per fire: {statistics.median(cpu[mode]):.3f} ms "
              f"(rounds: {', '.join(f'{c:.3f}' for c in cpu[mode])})")  # fmt: skip
    off = statistics.median(cpu["off"])
    print("\nCPU per fire against off, median of the per-round ratios (paired rounds: a drift of "
          "the machine hits both sides of a ratio alike):")  # fmt: skip
    for mode in ports:
        if mode != "off":
            print(f"  {mode:<8} {paired_overhead(cpu[mode], cpu['off']):+.1%}  "
                  f"({MEANINGS.get(mode, mode)})")  # fmt: skip
    costs = isolated_costs()
    print("\neach piece alone, per request: " + ", ".join(
        f"{name} {us:.1f} us ({us / 1000 / off:.1%} of a fire's CPU)" for name, us in costs.items()
    ))  # fmt: skip
    rates = [on.rate / o.rate for on, o in zip(runs["on"], runs["off"], strict=True)]
    print(
        f"\nobservability as deployed (on): {paired_overhead(cpu['on'], cpu['off']):+.1%} CPU per "
        f"fire (goal < 5 %); throughput on/off per round: {', '.join(f'{r:.2f}' for r in rates)};"
        f" {connections} connections, {seconds:.0f} s per mode, one uvicorn worker each"
    )


MEANINGS = {
    "on": "as deployed: metrics, request ID and context, JSON logs at INFO, no access log",
    "metrics": "metrics and request context, logs at WARNING",
    "access": "as deployed plus TRIGGERS_ACCESS_LOG=true: one JSON line per request",
}


def paired_overhead(mode: list[float], off: list[float]) -> float:
    """The median over rounds of CPU per fire in ``mode`` against ``off`` in the same round."""
    return statistics.median(m / o for m, o in zip(mode, off, strict=True)) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10, help="per mode, in all")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument(
        "--modes",
        default="on,off",
        help="on,off and optionally metrics (metrics, logs at WARNING) and access (on with the "
        "access log) to split the cost",
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.mode)
        return
    with ExitStack() as stack:
        url = os.environ.get("TRIGGERS_REDIS_URL") or stack.enter_context(RedisServer()).url
        ports = {mode: free_port() for mode in args.modes.split(",")}
        pids = {}
        for mode, port in ports.items():
            child = subprocess.Popen(
                [sys.executable, __file__, "--serve", url, "--port", str(port), "--mode", mode],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            stack.callback(child.wait)
            stack.callback(child.terminate)
            pids[mode] = child.pid
            wait_ready(port)
        asyncio.run(measure(ports, pids, args.seconds, args.connections, args.rounds))


if __name__ == "__main__":
    main()
