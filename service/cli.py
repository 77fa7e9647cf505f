"""The ``triggers`` command line: run the service, make API keys, and drive sessions.

* ``triggers serve [--host H] [--port P]``: the HTTP API. Without TRIGGERS_REDIS_URL it first
  starts the embedded Redis (files in TRIGGERS_DATA_DIR, append-only file on) and an
  in-process worker, and stops both, Redis flushed, when the API stops (SIGINT or SIGTERM).
* ``triggers worker [--processes N] [--threads M]``: Dramatiq workers that run tasks.
* ``triggers api-key NAME [--prefix P ...] [--scope S ...]``: a new secret and its
  TRIGGERS_API_KEYS entry.
* ``triggers configure|fire|show|unresolved|replay|skip|delete``: talk to a running service
  (``--url``, default http://127.0.0.1:8000; ``--api-key`` or TRIGGERS_CLIENT_API_KEY).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.api.auth import SCOPES, new_api_key
from service.client import TriggersClient, TriggersHTTPError
from service.settings import Settings
from service.worker.broker import TopologyError, check_topology
from service.worker.process import run_workers, start_worker

log = logging.getLogger("triggers")


@contextmanager
def redis_for(settings: Settings) -> Iterator[Settings]:
    """The settings with a Redis URL: the configured one, or a started embedded server."""
    if settings.redis_url:
        yield settings
        return
    from service.redis_server import RedisServer

    folder = Path(settings.data_dir).resolve() / "redis"
    try:
        with RedisServer(data_dir=folder, appendonly=True) as server:
            log.info("embedded Redis on %s, data in %s (append-only file on)", server.url, folder)
            # Everything that reads settings from the environment (the in-process worker, the
            # dispatcher's broker) uses this server too.
            os.environ["TRIGGERS_REDIS_URL"] = server.url
            yield settings.model_copy(update={"redis_url": server.url})
    finally:
        log.info("embedded Redis stopped, data flushed")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def refused(command: str) -> bool:
    """A topology that cannot work (service/worker/broker.py) stops the command in one line."""
    try:
        check_topology(Settings())
    except TopologyError as error:
        print(f"triggers {command}: {error}", file=sys.stderr)
        return True
    return False


def serve(args: argparse.Namespace) -> int:
    """Run the API until SIGINT or SIGTERM; the embedded Redis is stopped (flushed) after it.

    uvicorn handles both signals for a graceful shutdown and then raises them again; our
    handlers turn that into exceptions that unwind the ``with`` blocks, so the Redis child is
    always stopped, never orphaned.
    """
    import uvicorn

    from service.api.app import create_app

    if refused("serve"):
        return 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    embedded = not Settings().redis_url
    try:
        with redis_for(Settings()) as settings:
            worker = start_worker(settings) if embedded else None
            try:
                uvicorn.run(
                    create_app(settings), host=args.host, port=args.port, loop="uvloop",
                    http="httptools", log_level=args.log_level, lifespan="on",
                )  # fmt: skip
            finally:
                if worker is not None:
                    worker.stop(timeout=10_000)
    except KeyboardInterrupt:
        pass
    return 0


def worker(args: argparse.Namespace) -> int:
    """`triggers worker`: Dramatiq worker processes (TRIGGERS_REDIS_URL must be set)."""
    settings = Settings()
    if refused("worker"):
        return 2
    if not (settings.redis_url or settings.broker_url):
        print("triggers worker: set TRIGGERS_REDIS_URL (state) and optionally "
              "TRIGGERS_BROKER_URL", file=sys.stderr)  # fmt: skip
        return 2
    return run_workers(args.processes or settings.worker_processes,
                       args.threads or settings.worker_threads)  # fmt: skip


def api_key(args: argparse.Namespace) -> int:
    secret, entry = new_api_key(args.name, args.prefix or [], args.scope or list(SCOPES))
    print(f"secret (give it to the client, it is not stored): {secret}")
    print("entry for TRIGGERS_API_KEYS (a JSON list of such entries):")
    print(entry.model_dump_json())
    return 0


def _client(args: argparse.Namespace) -> TriggersClient:
    key = args.api_key or os.environ.get("TRIGGERS_CLIENT_API_KEY")
    return TriggersClient(args.url, key)


def _json_arg(text: str | None) -> Any:
    if text is None:
        return None
    if text.startswith("@"):
        return json.loads(Path(text[1:]).read_text())
    return json.loads(text)


CLIENT_COMMANDS: dict[str, Callable[[TriggersClient, argparse.Namespace], Any]] = {
    "configure": lambda c, a: c.configure(a.uid, _json_arg(a.config), replace=a.replace),
    "fire": lambda c, a: c.fire(a.uid, a.trigger, _json_arg(a.kwargs)),
    "show": lambda c, a: c.session(a.uid),
    "unresolved": lambda c, a: {
        "tasks": c.unresolved_tasks(a.uid)["tasks"],
        "instances": c.unresolved_instances(a.uid)["instances"],
    },
    "replay": lambda c, a: c.replay(a.uid, a.instance, _json_arg(a.kwargs)),
    "skip": lambda c, a: c.skip(a.uid, a.instance, cascade=a.cascade),
    "delete": lambda c, a: c.delete(a.uid),
}


def run_client_command(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        answer = CLIENT_COMMANDS[args.command](client, args)
    except TriggersHTTPError as error:
        print(json.dumps(error.problem, indent=2), file=sys.stderr)
        return 1
    finally:
        client.close()
    if answer is not None:
        print(json.dumps(answer, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triggers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve", help="run the HTTP API (and the embedded Redis)")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--log-level", default="info")
    worker_parser = sub.add_parser("worker", help="run Dramatiq worker processes")
    worker_parser.add_argument("--processes", type=int, help="default TRIGGERS_WORKER_PROCESSES")
    worker_parser.add_argument("--threads", type=int, help="default TRIGGERS_WORKER_THREADS")
    key_parser = sub.add_parser("api-key", help="make a new API key and its settings entry")
    key_parser.add_argument("name")
    key_parser.add_argument("--prefix", action="append", help="UID prefix it may touch")
    key_parser.add_argument("--scope", action="append", choices=SCOPES)

    def client_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--url", default="http://127.0.0.1:8000")
        p.add_argument("--api-key", default=None)
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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "api-key":
        return api_key(args)
    if args.command == "worker":
        return worker(args)
    return run_client_command(args)


if __name__ == "__main__":
    sys.exit(main())
