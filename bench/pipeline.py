"""Pipeline throughput: fire -> ``triggers worker`` -> finished task, against a bare Dramatiq
actor with the same threads, poll and Redis broker.

Per round and task kind (a no-op Python task; a no-op HTTP task on a loopback server), side by
side on one Redis:

* **ours**: N sessions configured with one task ``t`` after ``go``; the worker process tree is
  held (SIGSTOP) while N fires go through a real ``triggers serve`` (API only); then it is
  resumed and the clock runs until every message is acknowledged (the broker's ``.msgs`` hash
  is empty), i.e. every task claimed, run and completed. Every instance is checked finished.
* **bare**: 4 N messages sent to a bare Dramatiq worker's no-op actor (or one making the same
  HTTP call), held and resumed the same way (4 N: its drain is many times faster, and should
  last long enough to measure too).

So tasks/s is the drain rate of a full queue (the worker alone, no producer competing for the
two cores). Worker CPU per task covers the drain; Redis CPU and EVALSHA per task cover
producing and draining (fires or sends included), as the issue counts them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import redis

from bench.loadgen import _read_response, encode_request
from bench.procstat import cpu_seconds, pause, resume
from bench.table import Row
from service.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "benchpl"
QUEUE_MSGS = f"{PREFIX}-dramatiq:triggers.msgs"  # Dramatiq's RedisBroker: <ns>:<queue>.msgs
BARE_NS = "bench-bare-pl"
BARE_MSGS = f"{BARE_NS}:bare.msgs"
THREADS = 8
POLL_MS = 20
BARE_FACTOR = 4  # the bare drain is ~10x faster: more tasks, so it too lasts long enough


# -- children ---------------------------------------------------------------------------------


def bare_worker(redis_url: str) -> None:
    """Child process: a bare Dramatiq worker, a no-op actor and one making one HTTP call."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=redis_url, namespace=BARE_NS)  # type: ignore[no-untyped-call]
    dramatiq.set_broker(broker)
    client = httpx.Client()

    @dramatiq.actor(queue_name="bare", max_retries=0)
    def noop() -> None:
        pass

    @dramatiq.actor(queue_name="bare", max_retries=0)
    def ping(url: str) -> None:
        client.post(url, content=b"{}").raise_for_status()

    worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=POLL_MS)
    worker.start()
    threading.Event().wait()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    try:
        while line := await reader.readline():
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(answer)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def loopback(port: int) -> None:
    """Child process: a keep-alive HTTP server answering every request 200 ``{}``."""

    async def main() -> None:
        server = await asyncio.start_server(_answer, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


# -- load --------------------------------------------------------------------------------------


async def _send_some(port: int, requests: list[bytes], failures: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            writer.write(request)
            status = await _read_response(reader)
            if status >= 300:
                failures.append(status)
    finally:
        writer.close()


def send_all(port: int, requests: list[bytes], connections: int = 16) -> None:
    """Each request once over ``connections`` keep-alive connections; raise on any non-2xx."""
    failures: list[int] = []

    async def main() -> None:
        await asyncio.gather(*(_send_some(port, requests[i::connections], failures)
                               for i in range(connections)))  # fmt: skip

    asyncio.run(main())
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. status {failures[0]}")


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Drain:
    tasks: int
    seconds: float
    worker_cpu: float  # seconds, the drain
    redis_cpu: float  # seconds, producing and draining
    evalsha: int  # calls, producing and draining

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def drain(
    client: redis.Redis,
    worker: int,
    msgs_key: str,
    produce: Callable[[], int],
    alive: Callable[[], None],
) -> Drain:
    """Produce while ``worker`` is held, then resume it until ``msgs_key`` is empty (``alive``
    raises when a child died: a failure, not a wait until the deadline)."""
    cpu0, calls0 = redis_cpu(client), evalsha_calls(client)
    tasks = produce()
    landed = time.perf_counter() + 30  # the API enqueues in batches after its answers: wait
    while client.hlen(msgs_key) < tasks and time.perf_counter() < landed:  # for them, or an
        alive()  # empty hash would end the drain at once (instances left "scheduled")
        time.sleep(0.005)
    worker0 = cpu_seconds(worker)
    start = time.perf_counter()
    resume(worker)
    deadline = start + 120 + tasks / 10
    while client.hlen(msgs_key):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{msgs_key}: {client.hlen(msgs_key)} messages never handled")
        alive()
        time.sleep(0.005)
    seconds = time.perf_counter() - start
    pause(worker)
    return Drain(tasks, seconds, cpu_seconds(worker) - worker0, redis_cpu(client) - cpu0,
                 evalsha_calls(client) - calls0)  # fmt: skip


class Pipeline:
    """The processes of the pipeline rows, started once; rounds run through ``ours``/``bare``."""

    def __init__(self, stack: ExitStack) -> None:
        self.redis = stack.enter_context(RedisServer())
        self.client = redis.Redis.from_url(self.redis.url)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        self.api_port, self.http_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
        env.update(TRIGGERS_REDIS_URL=self.redis.url, TRIGGERS_AUTH="off",
                   TRIGGERS_DATA_DIR=str(folder), TRIGGERS_OUTBOUND_ALLOW="127.0.0.1",
                   TRIGGERS_TASK_MODULES="bench.e2e_tasks", TRIGGERS_KEY_PREFIX=PREFIX,
                   TRIGGERS_WORKER_POLL_MS=str(POLL_MS), PYTHONPATH=str(ROOT))  # fmt: skip
        me = [sys.executable, "-m", "bench.pipeline"]
        cli = [sys.executable, "-m", "service.cli"]
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        for name, argv in (
            ("loopback", [*me, "--loopback", str(self.http_port)]),
            ("api", [*cli, "serve", "--port", str(self.api_port), "--log-level", "warning"]),
            ("worker", [*cli, "worker", "--processes", "1", "--threads", str(THREADS)]),
            ("bare", [*me, "--bare-worker", self.redis.url]),
        ):
            log = (folder / f"{name}.log").open("wb")
            child = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=log)
            stack.callback(self._stop, child)
            self.children[name] = child
        self.logs = folder
        self.api_cpu = 0.0  # seconds the API spent on the latest round's fires
        self._wait_api()
        self.bare_broker = self._bare_broker()

    @staticmethod
    def _stop(child: subprocess.Popen[bytes]) -> None:
        resume(child.pid)
        child.terminate()
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()

    def _wait_api(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                url = f"http://127.0.0.1:{self.api_port}/readyz"
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("triggers serve did not become ready")

    def check_alive(self) -> None:
        for name, child in self.children.items():
            if child.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"pipeline child {name} exited:\n{tail}")

    def _bare_broker(self) -> object:
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=self.redis.url, namespace=BARE_NS)  # type: ignore[no-untyped-call]
        self.noop = dramatiq.Actor(lambda: None, actor_name="noop", queue_name="bare",
                                   broker=broker, priority=0, options={})  # fmt: skip
        self.ping = dramatiq.Actor(lambda url: None, actor_name="ping", queue_name="bare",
                                   broker=broker, priority=0, options={})  # fmt: skip
        return broker

    def task_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/task"

    def ours(self, kind: str, count: int) -> Drain:
        run = "bench_hop" if kind == "python" else self.task_url()
        config = orjson.dumps({"tasks": {"t": {"after": ["go"], "run": run}}})
        tag = uuid.uuid4().hex[:8]
        uids = [f"pl:{kind}:{tag}:{n}" for n in range(count)]
        send_all(self.api_port, [encode_request("PUT", f"/sessions/{u}/config", config)
                                 for u in uids])  # fmt: skip
        fires = [encode_request("POST", f"/sessions/{u}/fire", b'{"trigger":"go"}') for u in uids]

        def produce() -> int:
            api0 = cpu_seconds(self.children["api"].pid)
            send_all(self.api_port, fires)
            self.api_cpu = cpu_seconds(self.children["api"].pid) - api0
            return count

        worker = self.children["worker"].pid
        result = drain(self.client, worker, QUEUE_MSGS, produce, self.check_alive)
        self.check_finished(uids)
        return result

    def bare(self, kind: str, count: int) -> Drain:
        url = self.task_url()

        def produce() -> int:
            for _ in range(count):
                if kind == "python":
                    self.noop.send()
                else:
                    self.ping.send(url)
            return count

        return drain(self.client, self.children["bare"].pid, BARE_MSGS, produce, self.check_alive)

    def check_finished(self, uids: list[str]) -> None:
        """Nothing lost: every session's instance finished (read after the clock stopped)."""
        statuses: dict[str, int] = {}
        with httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}") as http:
            for uid in uids:
                answer = http.get(f"/sessions/{uid}/instances/t%230")
                status = answer.json().get("status", str(answer.status_code))
                statuses[status] = statuses.get(status, 0) + 1
        if statuses != {"finished": len(uids)}:
            raise RuntimeError(f"pipeline: instances not all finished: {statuses}")


def measure(rounds: int, count: int) -> list[Row]:
    """Warm-up, then alternating rounds of ours and bare per task kind; rows of the table."""
    kinds = ("python", "http")
    results: dict[tuple[str, str], list[Drain]] = {}
    api_cpu: list[float] = []
    with ExitStack() as stack:
        pipeline = Pipeline(stack)
        for kind in kinds:  # warm-up: imports, scripts, connections; workers end up held
            pipeline.ours(kind, 20)
            pipeline.bare(kind, 20)
        for _ in range(rounds):
            for kind in kinds:
                results.setdefault((kind, "ours"), []).append(pipeline.ours(kind, count))
                api_cpu.append(pipeline.api_cpu / count)
                reference = pipeline.bare(kind, count * BARE_FACTOR)
                results.setdefault((kind, "bare"), []).append(reference)
    rows = []
    for kind, label in (("python", "no-op Python task"), ("http", "no-op HTTP task, loopback")):
        ours, bare = results[(kind, "ours")], results[(kind, "bare")]
        rows += [
            Row(f"pipeline tasks/s / bare Dramatiq: {label}", "/s", [d.rate for d in ours],
                [d.rate for d in bare], ">= 0.6", lambda r: r >= 0.6),
            Row("  worker CPU per task (info)", "ms",
                [d.worker_cpu / d.tasks * 1000 for d in ours],
                [d.worker_cpu / d.tasks * 1000 for d in bare]),
            Row("  Redis CPU per task, fire/send included (info)", "ms",
                [d.redis_cpu / d.tasks * 1000 for d in ours],
                [d.redis_cpu / d.tasks * 1000 for d in bare]),
            Row("  EVALSHA per task, fire/send included (info)", "",
                [d.evalsha / d.tasks for d in ours], [d.evalsha / d.tasks for d in bare]),
        ]  # fmt: skip
    rows.append(Row("  API CPU per fire (triggers serve, info)", "ms", [c * 1000 for c in api_cpu]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per round and kind")
    parser.add_argument("--bare-worker", help=argparse.SUPPRESS)
    parser.add_argument("--loopback", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_worker:
        bare_worker(args.bare_worker)
    elif args.loopback:
        loopback(args.loopback)
    else:
        from bench.table import render

        print(render(measure(args.rounds, args.tasks)))


if __name__ == "__main__":
    main()
