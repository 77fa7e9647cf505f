"""``triggers doctor``: checks a deployment from where it runs, one verdict per line.

Each check answers ``OK``, ``WARN`` or ``FAIL`` with what it saw and, when not OK, what to do.
Exit code: 0 when nothing failed (warnings included), 1 when something failed. The checks only
read (INFO, CONFIG GET, TIME, PING, ZCOUNT, GET): running it against production is safe.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

from service.engine.keys import pending_keys
from service.heartbeat import alive_ids, descriptions, fingerprint, sync_client
from service.settings import Settings

Verdict = Literal["OK", "WARN", "FAIL"]

MEMORY_WARN = 0.75
MEMORY_FAIL = 0.90
LATENCY_WARN_MS = 5.0
LATENCY_FAIL_MS = 50.0
SKEW_WARN_S = 0.5
SKEW_FAIL_S = 2.0
"""Leases, cooldowns and due times are compared with the Redis clock and this host's: a skew
of seconds shifts every deadline by as much."""
BACKLOG_AGE_MS = 30_000
"""Sessions of the pending index overdue for longer than this: the sweeper is not keeping up."""


@dataclass
class Finding:
    verdict: Verdict
    check: str
    detail: str

    def line(self) -> str:
        return f"{self.verdict:<4} {self.check}: {self.detail}"


class Doctor:
    def __init__(self, settings: Settings, node: Any, keys: Any) -> None:
        """``node``: a plain client on the configured Redis node (server-level commands);
        ``keys``: a client for the deployment's keys (a cluster client on a cluster)."""
        self.settings = settings
        self.node = node
        self.keys = keys
        self.prefix = settings.key_prefix

    def run(self) -> list[Finding]:
        try:
            info = self.node.info()
        except Exception as error:
            return [Finding("FAIL", "redis", f"unreachable ({type(error).__name__}: {error})")]
        checks: list[Callable[[dict[str, Any]], Finding]] = [
            self.version, self.eviction, self.aof, self.memory, self.latency, self.broker,
            self.workers, self.secret, self.clock, self.backlog,
        ]  # fmt: skip
        findings = []
        for check in checks:
            try:
                findings.append(check(info))
            except Exception as error:  # one broken check must not hide the others
                name = check.__name__
                findings.append(Finding("FAIL", name, f"{type(error).__name__}: {error}"))
        return findings

    def version(self, info: dict[str, Any]) -> Finding:
        version, mode = info.get("redis_version", "?"), info.get("redis_mode", "standalone")
        major = int(str(version).split(".")[0]) if str(version)[0].isdigit() else 0
        verdict: Verdict = "OK" if major >= 6 else "FAIL"
        advice = "" if verdict == "OK" else " (Redis 6.2 or later needed)"
        return Finding(verdict, "redis", f"version {version}, {mode}{advice}")

    def eviction(self, info: dict[str, Any]) -> Finding:
        try:
            policy = self.node.config_get("maxmemory-policy").get("maxmemory-policy")
        except Exception as error:  # managed Redis may forbid CONFIG
            return Finding("WARN", "maxmemory-policy", f"not readable ({error}): make sure it "
                           "is noeviction")  # fmt: skip
        if policy != "noeviction":
            return Finding("FAIL", "maxmemory-policy", f"{policy}: Redis may evict sessions "
                           "under memory pressure; set maxmemory-policy noeviction")  # fmt: skip
        return Finding("OK", "maxmemory-policy", "noeviction")

    def aof(self, info: dict[str, Any]) -> Finding:
        persistence = self.node.info("persistence")
        if str(persistence.get("aof_enabled")) != "1":
            return Finding("WARN", "aof", "append-only file off: a Redis crash loses the "
                           "changes since the last snapshot; set appendonly yes")  # fmt: skip
        return Finding("OK", "aof", "append-only file on")

    def memory(self, info: dict[str, Any]) -> Finding:
        memory = self.node.info("memory")
        used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        if limit == 0:
            return Finding("WARN", "memory", f"{used / 2**20:.1f} MiB used, no maxmemory: "
                           "Redis grows until the host runs out; set maxmemory")  # fmt: skip
        share = used / limit
        verdict: Verdict = (
            "FAIL" if share >= MEMORY_FAIL else "WARN" if share >= MEMORY_WARN else "OK"
        )
        return Finding(verdict, "memory", f"{share:.0%} of maxmemory used "
                       f"({used / 2**20:.1f} of {limit / 2**20:.1f} MiB)")  # fmt: skip

    def latency(self, info: dict[str, Any]) -> Finding:
        rounds = []
        for _ in range(5):
            started = time.perf_counter()
            self.node.ping()
            rounds.append((time.perf_counter() - started) * 1000)
        median = statistics.median(rounds)
        verdict: Verdict = (
            "FAIL" if median >= LATENCY_FAIL_MS else "WARN" if median >= LATENCY_WARN_MS else "OK"
        )
        return Finding(verdict, "latency", f"PING round trip {median:.2f} ms (median of 5)")

    def broker(self, info: dict[str, Any]) -> Finding:
        url = self.settings.broker_url
        if not url:
            return Finding("OK", "broker", "the state Redis (reachable)")
        if url.startswith("amqp"):
            import socket

            parsed = urlparse(url)
            with socket.create_connection((parsed.hostname or "localhost", parsed.port or 5672),
                                          timeout=5):  # fmt: skip
                pass
            return Finding("OK", "broker", f"RabbitMQ at {parsed.hostname} accepts connections")
        from redis import Redis

        client = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
        return Finding("OK", "broker", "Redis broker answers")

    def workers(self, info: dict[str, Any]) -> Finding:
        alive = alive_ids(self.keys, self.prefix)
        if not alive:
            return Finding("FAIL", "workers", "no worker alive: nothing runs tasks or sweeps "
                           "(start `triggers worker`)")  # fmt: skip
        hosts = sorted({worker.rpartition(":")[0] for worker in alive})
        return Finding("OK", "workers", f"{len(alive)} alive on {', '.join(hosts)}")

    def secret(self, info: dict[str, Any]) -> Finding:
        mine = self.settings.webhook_secret
        if mine is None:
            stored = self.keys.get(f"{self.prefix}:webhook-secret")
            mine = stored.decode() if isinstance(stored, bytes) else stored
        seen = {
            d.get("secret")
            for d in descriptions(self.keys, self.prefix, alive_ids(self.keys, self.prefix))
        }
        if mine is None and not seen:
            return Finding("OK", "signing secret", "none yet (made at the first worker start)")
        expected = fingerprint(mine) if mine else None
        if seen - {expected}:
            return Finding("FAIL", "signing secret", f"workers sign with {sorted(map(str, seen))},"
                           f" this host's setting gives {expected}: set the same "
                           "TRIGGERS_WEBHOOK_SECRET everywhere (or none)")  # fmt: skip
        return Finding("OK", "signing secret", f"fingerprint {expected} on every process")

    def clock(self, info: dict[str, Any]) -> Finding:
        before = time.time()
        seconds, micros = self.node.time()
        after = time.time()
        skew = (int(seconds) + int(micros) / 1e6) - (before + after) / 2
        verdict: Verdict = (
            "FAIL" if abs(skew) >= SKEW_FAIL_S else "WARN" if abs(skew) >= SKEW_WARN_S else "OK"
        )
        return Finding(verdict, "clock", f"Redis TIME - this host: {skew * 1000:+.0f} ms")

    def backlog(self, info: dict[str, Any]) -> Finding:
        now_ms = int(time.time() * 1000)
        key = pending_keys(self.prefix)[0]
        pending = int(self.keys.zcard(key))
        late = int(self.keys.zcount(key, "-inf", now_ms - BACKLOG_AGE_MS))
        detail = f"{pending} sessions pending, {late} overdue by more than 30 s"
        return Finding("WARN" if late else "OK", "outbox backlog", detail)


def diagnose(settings: Settings) -> list[Finding]:
    from redis import Redis

    assert settings.redis_url
    node = Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=5,
                          socket_connect_timeout=5)  # fmt: skip
    keys = sync_client(settings)
    try:
        return Doctor(settings, node, keys).run()
    finally:
        node.close()
        keys.close()
