"""The worker's HTTP client on plain asyncio (service/outbound_http.py), against real loopback
servers: connections only to checked addresses, reuse by host name (never across two names
served from one address), a pooled connection the server closed, the errors httpx names (task
outcomes carry them), TLS with the host name, no cookies."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpcore
import httpx
import pytest
import trustme

from service.outbound import Target
from service.outbound_http import (
    AsyncioBackend,
    OutboundClient,
    OutboundTransport,
    connecting_to,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Recording(AsyncioBackend):
    """Counts the connections the pool opened (so a test sees reuse, and that this backend,
    not httpx's own, carried the request)."""

    def __init__(self) -> None:
        self.opened = 0

    async def connect_tcp(self, *args: object, **kwargs: object) -> httpcore.AsyncNetworkStream:
        self.opened += 1
        return await super().connect_tcp(*args, **kwargs)  # type: ignore[arg-type]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


async def post(client: httpx.AsyncClient, url: str, **options: object) -> httpx.Response:
    """POST to ``url`` connected to 127.0.0.1, as if the outbound policy had checked it."""
    target = Target(url, httpx.URL(url).host, "127.0.0.1")
    with connecting_to(target):
        return await client.post(url, **options)  # type: ignore[arg-type]


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip


@contextlib.asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request with its body, keeping the connection open."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            head, body = await read_request(reader)
            cookie = b"x-saw-cookie: yes\r\n" if b"\r\ncookie:" in head.lower() else b""
            writer.write(answer(body, b"Set-Cookie: a=b; Path=/\r\n" + cookie))
            await writer.drain()
    writer.close()


async def test_requests_go_through_asyncio_and_reuse_the_connection() -> None:
    backend = Recording()
    client = OutboundClient(OutboundTransport(backend=backend))
    async with serving(echo_forever) as port, client:
        for n in range(3):
            reply = await post(client, f"http://127.0.0.1:{port}/t", content=b'{"n":%d}' % n)
            assert reply.status_code == 200
            assert reply.json() == {"n": n}
        assert backend.opened == 1


async def test_a_connection_the_server_closed_is_not_reused() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))  # keep-alive announced, then closed anyway
        await writer.drain()
        writer.close()

    backend = Recording()
    async with serving(once) as port, OutboundClient(OutboundTransport(backend=backend)) as client:
        for _ in range(3):
            assert (await post(client, f"http://127.0.0.1:{port}/t", content=b"{}")).json() == {}
            await asyncio.sleep(0.05)  # the close reaches the client's idle connection
        assert backend.opened == 3


async def test_a_connection_with_bytes_after_its_answer_is_not_reused() -> None:
    """A server that sends more than its answer: the extra bytes, arriving while the connection
    is idle in the pool (asyncio reads them ahead into its buffer), must never be taken for the
    next request's answer."""

    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                _, body = await read_request(reader)
                writer.write(answer(body))
                await writer.drain()
                await asyncio.sleep(0.01)  # while the client's connection is idle
                writer.write(answer(b'{"stale":true}'))
                await writer.drain()

    backend = Recording()
    client = OutboundClient(OutboundTransport(backend=backend))
    async with serving(chatty) as port, client:
        for n in range(3):
            reply = await post(client, f"http://127.0.0.1:{port}/t", content=b'{"n":%d}' % n)
            assert reply.json() == {"n": n}
            await asyncio.sleep(0.05)  # the extra answer reaches the idle connection
        assert backend.opened == 3


async def test_a_silent_server_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)

    async with serving(silent) as port, OutboundClient() as client:
        with pytest.raises(httpx.ReadTimeout):
            await post(client, f"http://127.0.0.1:{port}/t", content=b"{}", timeout=0.3)


async def test_a_reset_mid_answer_is_a_read_error() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    async with serving(reset) as port, OutboundClient() as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await post(client, f"http://127.0.0.1:{port}/t", content=b"{}")


async def test_a_closed_port_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens on it once closed
    async with OutboundClient() as client:
        with pytest.raises(httpx.ConnectError):
            await post(client, f"http://127.0.0.1:{port}/t", content=b"{}")


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(authority: trustme.CA) -> Iterator[ssl.SSLContext]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("tasks.example").configure_cert(context)
    yield context


async def test_tls_checks_the_host_name_over_the_checked_address(
    authority: trustme.CA, server_tls: ssl.SSLContext
) -> None:
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    client = OutboundClient(OutboundTransport(verify=trusting))
    async with serving(echo_forever, server_tls) as port, client:
        reply = await post(client, f"https://tasks.example:{port}/t", content=b'{"tls":1}')
        assert reply.json() == {"tls": 1}
        stream = reply.extensions["network_stream"]
        assert stream.get_extra_info("ssl_object").server_hostname == "tasks.example"


async def test_two_names_on_one_address_never_share_a_connection(
    authority: trustme.CA, server_tls: ssl.SSLContext
) -> None:
    """The certificate names tasks.example only: other.example, served from the same address
    and port, gets its own connection and its own (failing) certificate check instead of
    riding on tasks.example's open TLS session."""
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    backend = Recording()
    client = OutboundClient(OutboundTransport(backend=backend, verify=trusting))
    async with serving(echo_forever, server_tls) as port, client:
        assert (await post(client, f"https://tasks.example:{port}/t", content=b"{}")).json() == {}
        with pytest.raises(httpx.ConnectError):
            await post(client, f"https://other.example:{port}/t", content=b"{}")
        assert backend.opened == 2


async def test_tls_refuses_an_unknown_authority(server_tls: ssl.SSLContext) -> None:
    async with serving(echo_forever, server_tls) as port, OutboundClient() as client:
        with pytest.raises(httpx.ConnectError):
            await post(client, f"https://tasks.example:{port}/t", content=b"{}")


async def test_the_host_header_is_the_host_name() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        seen.append(head)
        writer.write(answer(b"{}"))
        await writer.drain()
        writer.close()

    async with serving(record) as port, OutboundClient() as client:
        await post(client, f"http://tasks.example:{port}/t", content=b"{}")
    assert f"\r\nhost: tasks.example:{port}\r\n".encode() in seen[0].lower()


async def test_nothing_connects_without_a_checked_address() -> None:
    """Outside connecting_to, or for another host than the checked one, the client refuses
    before connecting: nothing reaches the server."""
    arrived: list[int] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.append(1)
        writer.close()

    async with serving(count) as port, OutboundClient() as client:
        url = f"http://127.0.0.1:{port}/t"
        with pytest.raises(httpx.ConnectError, match="outbound policy"):
            await client.post(url, content=b"{}")
        other = Target(f"http://other.example:{port}/t", "other.example", "127.0.0.1")
        with connecting_to(other), pytest.raises(httpx.ConnectError, match="outbound policy"):
            await client.post(url, content=b"{}")
        await asyncio.sleep(0.05)
    assert arrived == []


async def test_no_cookie_is_kept_sent_or_settable() -> None:
    async with serving(echo_forever) as port, OutboundClient() as client:
        for _ in range(2):
            reply = await post(client, f"http://127.0.0.1:{port}/t", content=b"{}")
            assert reply.headers["set-cookie"].startswith("a=b")
            assert "x-saw-cookie" not in reply.headers
        client.cookies = {"forced": "1"}
        client.cookies.set("also", "2")
        reply = await post(client, f"http://127.0.0.1:{port}/t", content=b"{}")
        assert "x-saw-cookie" not in reply.headers
        assert not client.cookies


def test_httpx_still_sends_through_its_pool_attribute() -> None:
    """The one httpx internal relied on: AsyncHTTPTransport keeps its httpcore pool in
    ``_pool`` and sends through it (the request tests above prove the sending)."""
    transport = OutboundTransport()
    assert isinstance(transport._pool, httpcore.AsyncConnectionPool)
    assert isinstance(transport._pool._network_backend, AsyncioBackend)
