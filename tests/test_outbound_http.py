"""The worker's HTTP client on plain asyncio (service/worker/outbound_http.py), against real
loopback servers: requests and connection reuse, a pooled connection the server closed, the
errors httpx names (task outcomes carry them), TLS with the checked host name, no cookies."""

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

from service.worker.outbound_http import AsyncioBackend, OutboundClient, OutboundTransport

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
            reply = await client.post(f"http://127.0.0.1:{port}/t", content=b'{"n":%d}' % n)
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
            assert (await client.post(f"http://127.0.0.1:{port}/t", content=b"{}")).json() == {}
            await asyncio.sleep(0.05)  # the close reaches the client's idle connection
        assert backend.opened == 3


async def test_a_silent_server_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)

    async with serving(silent) as port, OutboundClient() as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"http://127.0.0.1:{port}/t", content=b"{}", timeout=0.3)


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
            await client.post(f"http://127.0.0.1:{port}/t", content=b"{}")


async def test_a_closed_port_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens on it once closed
    async with OutboundClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{port}/t", content=b"{}")


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(authority: trustme.CA) -> Iterator[ssl.SSLContext]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("tasks.example").configure_cert(context)
    yield context


async def test_tls_checks_the_name_given_for_the_address(
    authority: trustme.CA, server_tls: ssl.SSLContext
) -> None:
    """As service/outbound.py sends it: the URL holds the checked address, the Host header and
    the TLS server name the original host."""
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    client = OutboundClient(OutboundTransport(verify=trusting))
    async with serving(echo_forever, server_tls) as port, client:
        url = f"https://127.0.0.1:{port}/t"
        named = {"sni_hostname": "tasks.example"}
        reply = await client.post(url, content=b'{"tls":1}', headers={"Host": "tasks.example"},
                                  extensions=named)  # fmt: skip
        assert reply.json() == {"tls": 1}
        stream = reply.extensions["network_stream"]
        assert stream.get_extra_info("ssl_object").server_hostname == "tasks.example"
    fresh = OutboundClient(OutboundTransport(verify=trusting))  # no pooled connection
    async with serving(echo_forever, server_tls) as port, fresh:
        with pytest.raises(httpx.ConnectError):  # the certificate does not name this host
            await fresh.post(f"https://127.0.0.1:{port}/t", content=b"{}",
                             extensions={"sni_hostname": "other.example"})  # fmt: skip


async def test_tls_refuses_an_unknown_authority(server_tls: ssl.SSLContext) -> None:
    async with serving(echo_forever, server_tls) as port, OutboundClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"https://127.0.0.1:{port}/t", content=b"{}",
                              extensions={"sni_hostname": "tasks.example"})  # fmt: skip


async def test_no_cookie_is_kept_sent_or_settable() -> None:
    async with serving(echo_forever) as port, OutboundClient() as client:
        for _ in range(2):
            reply = await client.post(f"http://127.0.0.1:{port}/t", content=b"{}")
            assert reply.headers["set-cookie"].startswith("a=b")
            assert "x-saw-cookie" not in reply.headers
        client.cookies = {"forced": "1"}
        client.cookies.set("also", "2")
        reply = await client.post(f"http://127.0.0.1:{port}/t", content=b"{}")
        assert "x-saw-cookie" not in reply.headers
        assert not client.cookies


def test_httpx_still_sends_through_its_pool_attribute() -> None:
    """The one httpx internal relied on: AsyncHTTPTransport keeps its httpcore pool in
    ``_pool`` and sends through it (the request tests above prove the sending)."""
    transport = OutboundTransport()
    assert isinstance(transport._pool, httpcore.AsyncConnectionPool)
    assert isinstance(transport._pool._network_backend, AsyncioBackend)
