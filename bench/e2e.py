"""End-to-end latency: from a fire's answer to the HTTP task receiving its request.

Side by side in one run, on one Redis (state and broker), with the same worker settings
(one process, TRIGGERS_WORKER_POLL_MS idle poll):

* ``fire -> task``: POST /sessions/{uid}/fire to a real ``triggers serve`` (API only), a real
  ``triggers worker`` runs the HTTP task, a loopback server records when the request arrives;
  measured from the moment the fire's answer is back (the API sends its message in the batch
  of the event-loop tick that answered).
* ``chain of 10``: ten Python tasks cascading into an HTTP task: fire to arrival, per hop.
* ``bare actor``: a plain Dramatiq actor on the same broker whose body makes the same HTTP
  call; measured from ``send()`` returning to the arrival. This is the floor of the stack.

Goals (issues "Execution" and 11): fire -> task within 1.3x of the bare actor; idle system p50
under 50 ms and p99 under 250 ms. Run: ``.venv/bin/python bench/e2e.py [--samples 100]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.redis_server import RedisServer, free_port

arrivals: dict[str, float] = {}
arrived = threading.Condition()


class Recorder(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # records the arrival time of each request, keyed by its path
        now = time.perf_counter()
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with arrived:
            arrivals[self.path] = now
            arrived.notify_all()
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def wait_arrival(path: str, timeout: float = 10) -> float:
    with arrived:
        if not arrived.wait_for(lambda: path in arrivals, timeout):
            raise TimeoutError(path)
        return arrivals.pop(path)


def bare_worker(redis_url: str, poll_ms: int) -> None:
    """Child process: a bare Dramatiq worker whose actor makes the same HTTP call."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=redis_url, namespace="bench-bare")  # type: ignore[no-untyped-call]
    dramatiq.set_broker(broker)
    client = httpx.Client()

    @dramatiq.actor(queue_name="bare", max_retries=0)
    def ping(url: str) -> None:
        client.post(url, content=b"{}")

    worker = dramatiq.Worker(broker, worker_threads=8, worker_timeout=poll_ms)
    worker.start()
    threading.Event().wait()


def stats(name: str, values: list[float]) -> float:
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{name:<22} {p50:>9.1f} {p99:>9.1f} {len(values):>8}")
    return p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print JSON (bench/run.py)")
    parser.add_argument("--bare-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_worker:
        bare_worker(args.bare_worker[0], int(args.bare_worker[1]))
        return
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    task_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    with RedisServer() as redis_server, tempfile.TemporaryDirectory() as data:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
        env.update(TRIGGERS_REDIS_URL=redis_server.url, TRIGGERS_AUTH="off",
                   TRIGGERS_DATA_DIR=data, TRIGGERS_OUTBOUND_ALLOW="127.0.0.1",
                   TRIGGERS_TASK_MODULES="bench.e2e_tasks", TRIGGERS_MANAGER="default",
                   PYTHONPATH=str(Path(__file__).resolve().parent.parent))  # fmt: skip
        poll_ms = int(env.get("TRIGGERS_WORKER_POLL_MS", "20"))
        port = free_port()
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        children = [
            subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port),
                              "--log-level", "warning"], **quiet),  # type: ignore[call-overload]
            subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--processes",
                              "1", "--threads", "8"], **quiet),  # type: ignore[call-overload]
            subprocess.Popen([sys.executable, __file__, "--bare-worker", redis_server.url,
                              str(poll_ms)], **quiet),  # type: ignore[call-overload]
        ]  # fmt: skip
        try:
            samples = run(f"http://127.0.0.1:{port}", task_url, redis_server.url, args.samples)
            if args.json:
                print(json.dumps(samples))
            else:
                report(samples)
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.wait(20)
            httpd.shutdown()


def run(api: str, task_url: str, redis_url: str, samples: int) -> dict[str, list[float]]:
    http = httpx.Client(base_url=api, timeout=10)
    deadline = time.monotonic() + 30
    while True:
        try:
            if http.get("/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("API did not start")
        time.sleep(0.1)
    os.environ["TRIGGERS_REDIS_URL"] = redis_url
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    bare_broker = RedisBroker(url=redis_url, namespace="bench-bare")  # type: ignore[no-untyped-call]
    ping = dramatiq.Actor(lambda url: None, actor_name="ping", queue_name="bare",
                          broker=bare_broker, priority=0, options={})  # fmt: skip

    def fire_to_task(chain: int) -> float:
        uid = f"bench:{uuid.uuid4().hex[:10]}"
        path = f"/{uid}"
        tasks: dict[str, Any] = {}
        previous = "go"
        for hop in range(chain):
            tasks[f"t{hop}"] = {"after": [previous], "run": "bench_hop"}
            previous = f"t{hop}"
        tasks["t_http"] = {"after": [previous], "run": task_url + path}
        http.put(f"/sessions/{uid}/config", json={"tasks": tasks}).raise_for_status()
        http.post(f"/sessions/{uid}/fire", json={"trigger": "go"}).raise_for_status()
        start = time.perf_counter()
        return (wait_arrival(path) - start) * 1000

    def bare() -> float:
        path = f"/bare-{uuid.uuid4().hex[:10]}"
        ping.send(task_url + path)
        start = time.perf_counter()
        return (wait_arrival(path) - start) * 1000

    for _ in range(10):  # warm-up: workers started, scripts loaded, connections open
        fire_to_task(0)
        bare()
    direct: list[float] = []
    floor: list[float] = []
    for _ in range(samples):  # alternate, one at a time: an idle system each time
        direct.append(fire_to_task(0))
        floor.append(bare())
        time.sleep(0.01)
    chain = [fire_to_task(10) for _ in range(max(10, samples // 5))]
    return {"fire_to_task": direct, "bare": floor, "chain": chain}


def report(samples: dict[str, list[float]]) -> None:
    direct, floor, chain = samples["fire_to_task"], samples["bare"], samples["chain"]
    print(f"{'path':<22} {'p50 ms':>9} {'p99 ms':>9} {'samples':>8}")
    ours = stats("fire -> task", direct)
    base = stats("bare actor -> task", floor)
    stats("chain of 10 -> task", chain)
    print(f"\nfire -> task / bare actor (p50): {ours / base:.2f}x (goal <= 1.3x)")
    print(f"chain of 10: {statistics.median(chain) / 11:.1f} ms per hop (p50)")


if __name__ == "__main__":
    main()
