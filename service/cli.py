"""The ``triggers`` command line: run the service, make API keys, and drive sessions.

* ``triggers serve [--host H] [--port P] [--workers N]``: the HTTP API. Without
  TRIGGERS_REDIS_URL it first starts the embedded Redis (files in TRIGGERS_DATA_DIR,
  append-only file on) and an in-process worker, and stops both, Redis flushed, when the API
  stops (SIGINT or SIGTERM). ``--workers N``: N API processes on the one port
  (service/supervisor.py).
* ``triggers worker [--processes N] [--threads M]``: Dramatiq workers that run tasks;
  ``--check``: exit 0 when this host's worker processes have a fresh heartbeat (exec probes).
* ``triggers doctor``: check a deployment, one verdict per line, exit 1 when a check fails.
* ``triggers api-key NAME [--prefix P ...] [--scope S ...]``: a new secret and its
  TRIGGERS_API_KEYS entry.
* ``triggers configure|fire|show|unresolved|replay|skip|delete``: talk to a running service
  (``--url`` or TRIGGERS_URL, default http://127.0.0.1:8000; ``--api-key`` or
  TRIGGERS_API_KEY). Quiet unless ``-v``.

Exit codes: 0 done; 1 the service refused (its problem in one line, all of it with -v); 2 bad
command line (unknown option, JSON that does not parse, an @file that cannot be read); 3 the
service could not be reached; 4 ``serve`` could not start (port busy, data directory in use,
no redis-server).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only the standard library at import: `triggers --help` and the client commands must start
# fast, so each command imports what it needs (FastAPI, uvicorn, dramatiq, redis) itself.
if TYPE_CHECKING:
    from service.client import TriggersClient
    from service.settings import Settings

log = logging.getLogger("triggers")

EXIT_OK = 0
EXIT_REFUSED = 1  # the service answered with an error (a problem document)
EXIT_USAGE = 2  # bad command line: unknown option, bad JSON, missing @file
EXIT_UNREACHABLE = 3  # no answer from the service (refused, timed out, bad URL)
EXIT_CANNOT_START = 4  # serve: port busy, data directory in use, no redis-server


def fail(command: str, message: str, code: int) -> int:
    """One line on stderr, no traceback: the error is the user's to fix, not a crash."""
    print(f"triggers {command}: {message}", file=sys.stderr)
    return code


class CommandFailed(Exception):
    """Ends a command with one line and an exit code (``main`` prints it)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def load_settings() -> Settings:
    """The service's settings; a bad value is one line naming the variable, not a traceback."""
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"TRIGGERS_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors()
        )
        raise CommandFailed(EXIT_USAGE, f"bad setting: {problems}") from None


@contextmanager
def redis_for(settings: Settings) -> Iterator[Settings]:
    """The settings with a Redis URL: the configured one, or a started embedded server.

    The embedded server's data directory is locked first (``DataDirLock``), and the Redis child
    shares the lock, so one data directory never gets two servers.
    """
    if settings.redis_url:
        yield settings
        return
    from service.redis_server import DataDirLock, RedisServer

    lock = DataDirLock(settings.data_dir).acquire()
    folder = Path(settings.data_dir).resolve() / "redis"
    started = False
    try:
        assert lock.fd is not None
        with RedisServer(data_dir=folder, appendonly=True, inherit_fds=(lock.fd,)) as server:
            started = True
            assert server.process is not None
            lock.record(f"redis-server pid {server.process.pid} on port {server.port}")
            log.info("embedded Redis on %s, data in %s (append-only file on)", server.url, folder)
            # Everything that reads settings from the environment (the in-process worker, the
            # dispatcher's broker) uses this server too.
            os.environ["TRIGGERS_REDIS_URL"] = server.url
            yield settings.model_copy(update={"redis_url": server.url})
    finally:
        lock.release()
        if started:
            log.info("embedded Redis stopped, data flushed")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def listen_socket(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound before anything else starts.

    A busy port must fail the start before the embedded Redis and the worker are started (and
    left to clean up); binding here and handing the socket to uvicorn also leaves no window for
    another process to take the port in between.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def refused(command: str, settings: Settings) -> bool:
    """A topology that cannot work (service/worker/broker.py) stops the command in one line."""
    from service.worker.broker import TopologyError, check_topology

    try:
        check_topology(settings)
    except TopologyError as error:
        fail(command, str(error), EXIT_USAGE)
        return True
    return False


def closing_server(
    config: Any, drain_seconds: float, on_started: Callable[[], None] | None = None
) -> Any:
    """The API's uvicorn server: it drains after SIGTERM (service/api/draining.py), then ends
    the app's open event streams when it begins to shut down (uvicorn waits for open responses
    before the app's lifespan ends; a stream never would). ``on_started``: called once the app
    has started and the socket is served (an API process of ``serve --workers N`` tells its
    parent)."""
    from service.api.draining import DrainingServer
    from service.api.events import close_streams

    class ClosingServer(DrainingServer):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_started is not None:
                on_started()

        async def shutdown(self, sockets: Any = None) -> None:
            close_streams(config.app)
            await super().shutdown(sockets=sockets)

    return ClosingServer(config, drain_seconds)


def run_api(
    settings: Settings,
    args: argparse.Namespace,
    sock: socket.socket,
    on_started: Callable[[], None] | None = None,
) -> None:
    """The API on the bound ``sock`` until a signal stops it: in the process of ``serve``, or
    in each API process of ``serve --workers N`` (service/supervisor.py)."""
    import uvicorn

    from service.api.app import create_app
    from service.api.slow_clients import header_deadline_protocol

    config = uvicorn.Config(
        create_app(settings), loop="uvloop",
        http=header_deadline_protocol(settings.header_timeout),
        timeout_keep_alive=settings.keep_alive_timeout,
        log_level=args.log_level, lifespan="on", log_config=None,
        access_log=settings.access_log,
        forwarded_allow_ips=args.forwarded_allow_ips,
    )  # fmt: skip
    closing_server(config, settings.drain_seconds, on_started).run(sockets=[sock])


def api_processes(args: argparse.Namespace, settings: Settings) -> int:
    """``--workers`` (else TRIGGERS_API_WORKERS): a whole number of API processes, >= 1."""
    text = args.workers
    if text is None:
        return settings.api_workers
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise CommandFailed(EXIT_USAGE, f"--workers must be a whole number of API processes, "
                            f"1 or more (not {text!r})")  # fmt: skip
    return count


def serve(args: argparse.Namespace) -> int:
    """Run the API until SIGINT or SIGTERM; the embedded Redis is stopped (flushed) after it.

    Order: the port is bound, then the data directory locked, then Redis started, so a second
    service fails at once, with one line, and starts nothing. uvicorn handles both signals for
    a graceful shutdown and then raises them again; our handlers turn that into exceptions that
    unwind the ``with`` blocks, so the Redis child is always stopped, never orphaned. With
    ``--workers N`` (N > 1) this process keeps the socket, Redis and the worker, and N API
    processes serve the socket (service/supervisor.py).
    """
    from service import tracing
    from service.redis_server import RedisServerError
    from service.worker.process import start_worker

    settings = load_settings()
    processes = api_processes(args, settings)
    tracing.setup("triggers-api")  # first: the embedded worker runs in this process too
    if refused("serve", settings):
        return EXIT_USAGE
    try:
        sock = listen_socket(args.host, args.port)
    except OSError as error:
        reason = error.strerror or str(error)
        message = (f"cannot listen on {args.host}:{args.port} ({reason}): is another service "
                   "using it? Choose another port with --port")  # fmt: skip
        return fail("serve", message, EXIT_CANNOT_START)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    embedded = not settings.redis_url
    code = EXIT_OK
    try:
        with sock, redis_for(settings) as settings:
            worker = start_worker(settings) if embedded else None
            try:
                if processes == 1:
                    log.info("serving on http://%s:%d", args.host, args.port)
                    run_api(settings, args, sock)
                else:
                    code = supervise(settings, args, sock, processes)
            finally:
                if worker is not None:
                    worker.stop(timeout=10_000)
    except RedisServerError as error:
        return fail("serve", str(error).splitlines()[0], EXIT_CANNOT_START)
    except KeyboardInterrupt:
        pass
    return code


def supervise(settings: Settings, args: argparse.Namespace, sock: socket.socket, n: int) -> int:
    """``serve --workers N``: this process's metrics port, then N API processes until a signal
    stops them (service/supervisor.py)."""
    from service.supervisor import Supervisor
    from service.worker.process import serve_metrics

    try:
        serve_metrics(settings, 0)  # this process: the worker and the sweeper
    except OSError as error:
        return fail("serve", f"cannot listen on metrics port {settings.metrics_port} "
                    f"({error.strerror or error})", EXIT_CANNOT_START)  # fmt: skip
    if settings.metrics_port is None:
        log.info("%d API processes: /metrics on the API port shows the answering process's "
                 "series; set TRIGGERS_METRICS_PORT for one port per process", n)  # fmt: skip
    return Supervisor(n, sock, args).run()


def worker(args: argparse.Namespace) -> int:
    """`triggers worker`: Dramatiq worker processes (TRIGGERS_REDIS_URL must be set)."""
    from service.worker.process import run_workers

    settings = load_settings()
    if refused("worker", settings):
        return EXIT_USAGE
    if not (settings.redis_url or settings.broker_url):
        return fail("worker", "set TRIGGERS_REDIS_URL (state) and optionally "
                    "TRIGGERS_BROKER_URL", EXIT_USAGE)  # fmt: skip
    if args.check:
        return check_worker(settings, args.processes or settings.worker_processes)
    return run_workers(args.processes or settings.worker_processes,
                       args.threads or settings.worker_threads)  # fmt: skip


def check_worker(settings: Settings, expected: int) -> int:
    """`triggers worker --check` (an exec probe): 0 when this host's worker processes all have
    a fresh heartbeat, 1 otherwise (stale, missing, or Redis unreachable)."""
    import socket

    from service.heartbeat import alive_ids

    if not settings.redis_url:
        return fail("worker", "--check needs TRIGGERS_REDIS_URL", EXIT_USAGE)
    from service.heartbeat import sync_client

    host = socket.gethostname()
    try:
        client = sync_client(settings)
        try:
            alive = alive_ids(client, settings.key_prefix)
            mine = [i for i in alive if i.rpartition(":")[0] == host]
        finally:
            client.close()
    except Exception as error:
        return fail("worker", f"--check: Redis unreachable ({type(error).__name__}: {error})", 1)
    if len(mine) < expected:
        return fail("worker", f"--check: {len(mine)} of {expected} worker processes on {host} "
                    "have a fresh heartbeat", 1)  # fmt: skip
    print(f"ok: {len(mine)} worker processes on {host} alive")
    return EXIT_OK


def doctor(args: argparse.Namespace) -> int:
    """`triggers doctor`: one verdict per line; exit 1 when a check failed."""
    from service.doctor import diagnose

    settings = load_settings()
    if not settings.redis_url:
        return fail("doctor", "set TRIGGERS_REDIS_URL to the deployment's Redis", EXIT_USAGE)
    findings = diagnose(settings)
    for finding in findings:
        print(finding.line())
    return 1 if any(f.verdict == "FAIL" for f in findings) else EXIT_OK


# The API key scopes (service.api.auth.SCOPES; a test keeps the two equal): spelled out here so
# that building the parser does not import the API.
SCOPES = ("read", "fire", "configure", "operate", "metrics")


def api_key(args: argparse.Namespace) -> int:
    from service.api.auth import new_api_key

    secret, entry = new_api_key(args.name, args.prefix or [], args.scope or list(SCOPES))
    print(f"secret (give it to the client, it is not stored): {secret}")
    print("entry for TRIGGERS_API_KEYS (a JSON list of such entries):")
    print(entry.model_dump_json())
    return 0


class UsageError(Exception):
    """A command-line argument that cannot be used (exit code 2)."""


def _json_arg(name: str, text: str | None) -> Any:
    """A JSON argument, inline or ``@file``."""
    if text is None:
        return None
    source = name
    if text.startswith("@"):
        source = text[1:]
        try:
            text = Path(source).read_text()
        except OSError as error:
            raise UsageError(f"cannot read {name} from @{source}: {error.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise UsageError(f"{source} is not valid JSON ({error})") from None


CLIENT_COMMANDS: dict[str, Callable[[TriggersClient, argparse.Namespace], Any]] = {
    "configure": lambda c, a: c.configure(a.uid, _json_arg("config", a.config), replace=a.replace),
    "fire": lambda c, a: c.fire(a.uid, a.trigger, _json_arg("kwargs", a.kwargs)),
    "show": lambda c, a: c.session(a.uid),
    "unresolved": lambda c, a: {
        "tasks": c.unresolved_tasks(a.uid)["tasks"],
        "instances": c.unresolved_instances(a.uid)["instances"],
    },
    "replay": lambda c, a: c.replay(a.uid, a.instance, _json_arg("kwargs", a.kwargs)),
    "skip": lambda c, a: c.skip(a.uid, a.instance, cascade=a.cascade),
    "delete": lambda c, a: c.delete(a.uid),
}


def problem_line(status: int, problem: dict[str, Any]) -> str:
    """A problem document in one line: status, title, detail, and each field named."""
    parts = [str(status), str(problem.get("title") or "error")]
    detail = problem.get("detail")
    if detail and detail != "see errors":
        parts.append(str(detail))
    errors = problem.get("errors") or []
    fields = "; ".join(
        f"{e.get('field')}: {e.get('message')}" for e in errors if isinstance(e, dict)
    )
    line = ": ".join(parts)
    return f"{line} ({fields})" if fields else line


def run_client_command(args: argparse.Namespace) -> int:
    """Call the service; every failure is one line and an exit code (see the module doc)."""
    from service.client import TriggersClient, TriggersError, TriggersHTTPError, TriggersUnreachable

    command = args.command
    try:
        client = TriggersClient(args.url, args.api_key)
    except Exception as error:  # httpx refuses a malformed base URL at construction
        return fail(command, f"bad --url/TRIGGERS_URL {args.url!r}: {error}", EXIT_USAGE)
    try:
        answer = CLIENT_COMMANDS[command](client, args)
    except UsageError as error:
        return fail(command, str(error), EXIT_USAGE)
    except TriggersUnreachable as error:
        return fail(command, f"{error}: is it running (triggers serve)? Set the address with "
                    "--url or TRIGGERS_URL", EXIT_UNREACHABLE)  # fmt: skip
    except TriggersHTTPError as error:
        if args.verbose:
            print(json.dumps(error.problem, indent=2), file=sys.stderr)
        return fail(command, problem_line(error.status, error.problem), EXIT_REFUSED)
    except TriggersError as error:
        return fail(command, str(error), EXIT_REFUSED)
    finally:
        client.close()
    if answer is not None:
        print(json.dumps(answer, indent=2))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triggers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log HTTP requests and "
                        "print whole problem documents")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve", help="run the HTTP API (and the embedded Redis)")
    serve_parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
        "machine only; 0.0.0.0 for every interface, with API keys)",
    )  # fmt: skip
    serve_parser.add_argument("--port", type=int, default=8000, help="default 8000")
    serve_parser.add_argument("--log-level", default="info")
    serve_parser.add_argument(
        "--workers", default=None, metavar="N",
        help="API processes sharing the port (default TRIGGERS_API_WORKERS, else 1); the "
        "embedded Redis, the in-process worker and its sweeper stay one, in the parent",
    )  # fmt: skip
    serve_parser.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="proxies whose X-Forwarded-For/-Proto are trusted, comma-separated or * (default: "
        "FORWARDED_ALLOW_IPS, else 127.0.0.1,::1)",
    )
    worker_parser = sub.add_parser("worker", help="run Dramatiq worker processes")
    worker_parser.add_argument("--processes", type=int, help="default TRIGGERS_WORKER_PROCESSES")
    worker_parser.add_argument("--threads", type=int, help="default TRIGGERS_WORKER_THREADS")
    worker_parser.add_argument(
        "--check", action="store_true",
        help="exit 0 if this host's worker processes (--processes) have a fresh heartbeat, "
        "else 1 (for exec probes)",
    )  # fmt: skip
    sub.add_parser("doctor", help="check a deployment (Redis, workers, secrets, clocks); exit "
                   "1 when a check fails")  # fmt: skip
    key_parser = sub.add_parser("api-key", help="make a new API key and its settings entry")
    key_parser.add_argument("name")
    key_parser.add_argument("--prefix", action="append", help="UID prefix it may touch")
    key_parser.add_argument("--scope", action="append", choices=SCOPES)

    def client_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--url",
            default=None,
            help="the service (default: TRIGGERS_URL, else http://127.0.0.1:8000)",
        )
        p.add_argument("--api-key", default=None, help="default: TRIGGERS_API_KEY")
        p.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="log HTTP requests and print whole problem documents",
        )
        p.add_argument("uid")
        return p

    p = client_parser("configure", "merge (or --replace) a configuration: JSON or @file")
    p.add_argument("config")
    p.add_argument("--replace", action="store_true")
    p = client_parser("fire", "fire a trigger")
    p.add_argument("trigger")
    p.add_argument("kwargs", nargs="?", help="JSON object or @file")
    client_parser("show", "print the whole session")
    client_parser("unresolved", "print unresolved tasks and instances, with why")
    p = client_parser("replay", "replay a failed instance")
    p.add_argument("instance")
    p.add_argument("kwargs", nargs="?", help="replacement kwargs (JSON or @file)")
    p = client_parser("skip", "skip a failed instance")
    p.add_argument("instance")
    p.add_argument("--cascade", action="store_true")
    client_parser("delete", "delete the session")
    return parser


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The service logs what it does; a client command prints its answer and nothing else
    # (no "INFO httpx HTTP Request" lines) unless -v.
    quiet = args.command not in ("serve", "worker") and not args.verbose
    if args.command in ("serve", "worker"):  # structured (TRIGGERS_LOG_FORMAT), see logs.py
        from service.logs import configure

        configure(logging.INFO)
    else:
        logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format=LOG_FORMAT)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "api-key":
            return api_key(args)
        if args.command == "worker":
            return worker(args)
        if args.command == "doctor":
            return doctor(args)
        return run_client_command(args)
    except CommandFailed as error:
        return fail(args.command, error.message, error.code)


if __name__ == "__main__":
    sys.exit(main())
