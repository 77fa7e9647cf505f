"""Outbound protection: closed internal addresses, the allow-list, connecting to the checked IP."""

from __future__ import annotations

import base64
import ipaddress
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from service.engine import Engine, Instance
from service.outbound import OutboundPolicy, OutboundRefused, is_public
from service.outbound_http import OutboundClient
from service.settings import Settings
from service.signing import Signer
from service.worker.http_task import HttpTaskRunner


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/task",  # loopback
        "http://localhost/task",  # resolves to loopback
        "http://10.1.2.3/task",  # private
        "http://192.168.0.10/task",
        "http://172.16.5.4/task",
        "http://169.254.169.254/latest/meta-data",  # link-local: cloud metadata
        "http://100.64.0.1/task",  # CGNAT
        "http://[::1]/task",  # IPv6 loopback
        "http://[fd00::1]/task",  # IPv6 unique-local
        "http://[fe80::1]/task",  # IPv6 link-local
        "http://[::ffff:127.0.0.1]/task",  # IPv4-mapped loopback
        "http://0.0.0.0/task",
        "ftp://example.com/file",  # not http(s)
        "http:///no-host",
    ],
)
async def test_internal_addresses_are_closed_by_default(url: str) -> None:
    with pytest.raises(OutboundRefused):
        await OutboundPolicy().resolve(url)


async def test_public_addresses_are_open_and_the_checked_ip_is_the_target() -> None:
    target = await OutboundPolicy().resolve("https://93.184.216.34:8443/hook?x=1")
    assert target.url == "https://93.184.216.34:8443/hook?x=1"
    assert target.address == "93.184.216.34"


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        ("localhost", "http://localhost:8080/t"),
        ("localhost:8080", "http://localhost:8080/t"),
        ("127.0.0.1", "http://127.0.0.1:9/t"),
        ("10.0.0.0/8", "http://10.9.8.7/t"),
        ("http://127.0.0.1:7000/tasks/", "http://127.0.0.1:7000/tasks/one"),
        ("::1", "http://[::1]:5000/t"),
    ],
)
async def test_the_allow_list_opens_exactly_what_it_names(allow: str, url: str) -> None:
    target = await OutboundPolicy(allow).resolve(url)
    assert target.address


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        ("localhost:8080", "http://localhost:8081/t"),  # another port
        ("127.0.0.1", "http://127.0.0.2/t"),  # another address in the same network
        ("http://127.0.0.1:7000/tasks/", "http://127.0.0.1:7000/admin"),  # another prefix
        ("10.0.0.0/8", "http://192.168.1.1/t"),
    ],
)
async def test_what_the_allow_list_does_not_name_stays_closed(allow: str, url: str) -> None:
    with pytest.raises(OutboundRefused):
        await OutboundPolicy(allow).resolve(url)


async def test_target_keeps_the_host_name_and_path_and_names_the_checked_address() -> None:
    """The name stays in the URL (Host header, TLS name, connection reuse are by name); the
    connection goes to ``address`` (tests/test_outbound_http.py)."""
    target = await OutboundPolicy("localhost").resolve("http://LocalHost:8123/a/./b?c=d#f")
    assert target.host == "localhost"
    assert target.url == "http://LocalHost:8123/a/b?c=d"
    assert target.address in ("127.0.0.1", "::1")


# -- issue 8.1: prefixes are parsed, userinfo is refused, embedded IPv4 is classified --------


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        # userinfo: reads as the allowed prefix, connects to the other host
        ("http://tasks.internal:9000", "http://tasks.internal:9000@169.254.169.254/latest/"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000@127.0.0.1:9001/secret"),
        # dot-segments: /tasks/../admin is /admin for the server
        ("http://127.0.0.1:7000/tasks/", "http://127.0.0.1:7000/tasks/../admin/delete"),
        ("http://127.0.0.1:7000/tasks/", "http://127.0.0.1:7000/tasks/%2e%2e/admin"),
        # segments other servers split or read as dot-segments
        ("http://127.0.0.1:7000/tasks/", "http://127.0.0.1:7000/tasks/a%2f..%2f..%2fadmin"),
        ("http://127.0.0.1:7000/tasks/", "http://127.0.0.1:7000/tasks/..%5cadmin"),
        ("http://127.0.0.1:7000/tasks/", "http://127.0.0.1:7000/tasks/..;/admin"),
        # whole segments: /tasks is not /tasksX
        ("http://127.0.0.1:7000/tasks", "http://127.0.0.1:7000/tasks-admin/x"),
        # port and scheme exactly
        ("http://127.0.0.1:7000/tasks/", "http://127.0.0.1:70001/tasks/x"),
        ("http://127.0.0.1:7000/tasks/", "http://127.0.0.1:7001/tasks/x"),
        ("https://127.0.0.1:7000/tasks/", "http://127.0.0.1:7000/tasks/x"),
        ("http://127.0.0.1/tasks/", "http://127.0.0.1:8080/tasks/x"),
    ],
)
async def test_url_prefixes_compare_parsed_parts(allow: str, url: str) -> None:
    with pytest.raises(OutboundRefused):
        await OutboundPolicy(allow).resolve(url)


@pytest.mark.parametrize(
    ("allow", "url", "path"),
    [
        ("http://127.0.0.1:7000/tasks/", "http://127.0.0.1:7000/tasks/a/../b", "/tasks/b"),
        ("http://127.0.0.1:7000/tasks", "http://127.0.0.1:7000/tasks/./one", "/tasks/one"),
        ("http://127.0.0.1:7000/tasks", "http://127.0.0.1:7000/tasks", "/tasks"),
        ("http://127.0.0.1/tasks/", "http://127.0.0.1:80/tasks/x", "/tasks/x"),
    ],
)
async def test_the_checked_path_is_the_path_sent(allow: str, url: str, path: str) -> None:
    target = await OutboundPolicy(allow).resolve(url)
    assert urlsplit(target.url).path == path


@pytest.mark.parametrize(
    "url",
    [
        "http://user@example.com/",
        "http://user:pw@93.184.216.34/",
        "http://93.184.216.34:99999/",
        "http://93.184.216.34:port/",
        "not a url",
        "http://exa mple.com/",
    ],
)
async def test_urls_that_hide_or_break_their_host_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefused):
        await OutboundPolicy("0.0.0.0/0").resolve(url)


@pytest.mark.parametrize(
    "address",
    [
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2002:c0a8:1::1",  # 6to4 of 192.168.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address
        "64:ff9b::7f00:1",
        "64:ff9b:1::1",  # local-use NAT64
        "::127.0.0.1",  # IPv4-compatible
        "::ffff:169.254.169.254",  # IPv4-mapped
        "::ffff:0:a00:1",  # IPv4-translated (SIIT) of 10.0.0.1
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
        "fe80::5efe:a00:1",  # ISATAP of 10.0.0.1
        "2001:db8::5efe:a00:1",
        "fec0::1",  # site-local
    ],
)
def test_ipv6_forms_that_embed_a_private_ipv4_are_private(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["2002:808:808::1", "64:ff9b::808:808", "2606:4700::1111"])
def test_ipv6_forms_embedding_a_public_ipv4_stay_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


async def test_embedded_private_ipv4_literals_are_refused_by_default() -> None:
    for url in ("http://[2002:7f00:1::1]/", "http://[64:ff9b::a9fe:a9fe]/latest/"):
        with pytest.raises(OutboundRefused):
            await OutboundPolicy().resolve(url)


def test_an_allow_list_entry_with_userinfo_or_a_bad_port_is_refused_at_start() -> None:
    for allow in ("http://user@127.0.0.1/", "http://127.0.0.1:99999/"):
        with pytest.raises(ValueError, match="TRIGGERS_OUTBOUND_ALLOW"):
            OutboundPolicy(allow)
        with pytest.raises(ValidationError, match="outbound_allow"):
            Settings(outbound_allow=allow)


# -- the symptoms of the issue, against real servers on loopback ---------------------------


SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


class Recorder(ThreadingHTTPServer):
    paths: list[str]


def _recording_server() -> Recorder:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            server.paths.append(self.path)
            body = b'{"secret": "s3cr3t"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = Recorder(("127.0.0.1", 0), Handler)
    server.paths = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def servers() -> Iterator[tuple[Recorder, Recorder]]:
    allowed, secret = _recording_server(), _recording_server()
    yield allowed, secret
    for server in (allowed, secret):
        server.shutdown()
        server.server_close()


async def _run_http_task(engine: Engine, policy: OutboundPolicy, run: str) -> Instance:
    """One HTTP task stored as it was before the configure-time checks, run by the worker's
    runner against the real endpoint, its outcome recorded by the engine."""
    uid = f"ssrf:{uuid.uuid4().hex[:8]}"
    await engine.configure(uid, {"tasks": {"t": {"after": ["go"], "run": run}}})
    await engine.fire(uid, "go")
    claim = await engine.claim(uid, "t#0")
    assert claim.token is not None
    async with OutboundClient() as client:  # the worker's: connects only to checked addresses
        runner = HttpTaskRunner(
            client, policy, Signer(SECRET), connect_timeout=5, read_timeout=5,
            max_response_bytes=1 << 20, max_timeout=30,
        )  # fmt: skip
        outcome = await runner.run(uid, "t#0", claim)
    if outcome.kind == "finished":
        await engine.complete(uid, "t#0", claim.token, outcome.result)
    else:
        await engine.fail(
            uid, "t#0", claim.token, outcome.exception_type, outcome.exception_info,
            outcome.exception_context,
        )  # fmt: skip
    return await engine.instance(uid, "t#0")


async def test_userinfo_cannot_reach_an_unlisted_port(
    engine: Engine, servers: tuple[Recorder, Recorder]
) -> None:
    allowed, secret = servers
    p1, p2 = allowed.server_address[1], secret.server_address[1]
    policy = OutboundPolicy(f"http://localhost:{p1}")
    instance = await _run_http_task(engine, policy, f"http://localhost:{p1}@127.0.0.1:{p2}/s")
    assert secret.paths == []
    assert instance.status == "failed"
    assert instance.metadata["exceptionType"] == "triggers.OutboundRefused"
    assert "s3cr3t" not in str(instance.metadata)


async def test_dot_segments_cannot_leave_an_allowed_prefix(
    engine: Engine, servers: tuple[Recorder, Recorder]
) -> None:
    allowed, _ = servers
    port = allowed.server_address[1]
    policy = OutboundPolicy(f"http://127.0.0.1:{port}/tasks/")
    instance = await _run_http_task(
        engine, policy, f"http://127.0.0.1:{port}/tasks/../admin/delete"
    )
    assert allowed.paths == []
    assert instance.status == "failed"
    instance = await _run_http_task(engine, policy, f"http://127.0.0.1:{port}/tasks/a/../b")
    assert allowed.paths == ["/tasks/b"]


async def test_a_plain_ip_address_is_taken_as_it_is_and_other_forms_are_resolved() -> None:
    """No lookup for an IP address written plainly (a thread hop per HTTP task otherwise);
    the checks are the same: a loopback literal still needs the allow-list."""
    with pytest.raises(OutboundRefused):
        await OutboundPolicy().resolve("http://127.0.0.1:8080/task")
    allowed = OutboundPolicy("127.0.0.1")
    assert (await allowed.resolve("http://127.0.0.1:8080/task")).address == "127.0.0.1"
    assert (await allowed.resolve("http://127.1:8080/task")).address == "127.0.0.1"
