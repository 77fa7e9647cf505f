"""Fire requests/s against a bare one-EVALSHA endpoint in the same stack, loaded by wrk.

The server is bench/api.py's: the real app (one uvicorn worker, uvloop + httptools, auth off)
plus ``POST /bench/noop``, which does exactly one EVALSHA of a no-op script, the limit of this
stack, and ``POST /bench/floor``, which does that EVALSHA and enqueues one Dramatiq message
through the batched sender: the floor of any request that schedules work (a fire here does:
its script, then its instance's message). wrk (Debian's package) drives each endpoint in
alternating rounds with the same connections and the same Lua request builder, so all pay the
same load generator; fires go round-robin to 16 configured sessions (an ``andEvery`` task: every
fire schedules one instance). The server's CPU time per request (from /proc) is shown too: on a
shared machine throughput swings with the neighbours, CPU time per request much less.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.api import wait_ready
from bench.procstat import cpu_seconds
from bench.table import Row
from service.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = [f"bench:wrk:{n}" for n in range(16)]
CONFIG = {"tasks": {"t_page": {"after": ["applicant"], "andEvery": "page", "run": "P"}}}
FIRE_BODY = '{"trigger":"page","kwargs":{"page":3,"responses":{"q1":"yes"}}}'
NOOP_BODY = '{"trigger":"page"}'

LUA = """
local paths = {%(paths)s}
local body = '%(body)s'
local headers = {["Content-Type"] = "application/json"}
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", paths[n %% #paths + 1], headers, body)
end
"""


def require_wrk() -> str:
    """wrk's path, or exit with one line saying how to install it."""
    path = shutil.which("wrk")
    if not path:
        sys.exit("bench: wrk not found (the HTTP load generator): sudo apt-get install wrk")
    return path


@dataclass
class WrkResult:
    rate: float
    p50_ms: float
    p99_ms: float
    bad: int  # non-2xx answers and socket errors


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse(output: str) -> WrkResult:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)  # fmt: skip
    if errors:
        bad += sum(int(n) for n in errors.groups())
    return WrkResult(rate, p50, p99, bad)


def run_wrk(wrk: str, script: Path, port: int, seconds: float, connections: int) -> WrkResult:
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return parse(out.stdout)


def script_for(folder: Path, name: str, paths: list[str], body: str) -> Path:
    path = folder / f"{name}.lua"
    quoted = ", ".join(f'"{p}"' for p in paths)
    path.write_text(LUA % {"paths": quoted, "body": body})
    return path


def measure(rounds: int, seconds: float, connections: int) -> list[Row]:
    """Alternating rounds of wrk on /bench/noop and on fire; rows of the table."""
    wrk = require_wrk()
    with RedisServer() as redis, tempfile.TemporaryDirectory() as folder:
        port = free_port()
        child = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "api.py"), "--serve", redis.url,
             "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_ready(port, child=child, seconds=60)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
                for uid in SESSIONS:
                    http.put(f"/sessions/{uid}/config", json=CONFIG).raise_for_status()
                    http.post(f"/sessions/{uid}/fire", json={"trigger": "applicant"})
            scripts = {
                "noop": script_for(Path(folder), "noop", ["/bench/noop"], NOOP_BODY),
                "floor": script_for(Path(folder), "floor", ["/bench/floor"], NOOP_BODY),
                "fire": script_for(Path(folder), "fire",
                                   [f"/sessions/{u}/fire" for u in SESSIONS], FIRE_BODY),
            }  # fmt: skip
            for script in scripts.values():  # warm-up: connections, scripts, caches
                run_wrk(wrk, script, port, 1, connections)
            runs: dict[str, list[WrkResult]] = {name: [] for name in scripts}
            cpu: dict[str, list[float]] = {name: [] for name in scripts}  # server ms per request
            for _ in range(rounds):
                for name, script in scripts.items():
                    before = cpu_seconds(child.pid)
                    result = run_wrk(wrk, script, port, seconds, connections)
                    used = cpu_seconds(child.pid) - before
                    cpu[name].append(used * 1000 / max(1.0, result.rate * seconds))
                    runs[name].append(result)
        finally:
            child.terminate()
            child.wait(20)
    bad = sum(r.bad for rs in runs.values() for r in rs)
    suffix = f" ({bad} errors!)" if bad else ""
    fire, noop, floor = runs["fire"], runs["noop"], runs["floor"]
    return [
        Row(f"fire req/s / bare EVALSHA endpoint (wrk -c{connections}){suffix}", "/s",
            [r.rate for r in fire], [r.rate for r in noop], ">= 0.85", lambda r: r >= 0.85),
        Row("  fire req/s / floor: EVALSHA + one Dramatiq enqueue (info)", "/s",
            [r.rate for r in fire], [r.rate for r in floor]),
        Row("  server CPU per request, steadier under load (info)", "ms", cpu["fire"],
            cpu["noop"]),
        Row("  server CPU per request, fire / floor (info)", "ms", cpu["fire"], cpu["floor"]),
        Row("  fire p50 latency under that load (info)", "ms", [r.p50_ms for r in fire],
            [r.p50_ms for r in noop]),
        Row("  fire p99 latency under that load (info)", "ms", [r.p99_ms for r in fire],
            [r.p99_ms for r in noop]),
    ]  # fmt: skip
