"""The worker's outbound HTTP client (task endpoints, webhooks): httpx on plain asyncio.

httpx's async transport runs httpcore over anyio, and anyio's per-operation layers (a cancel
scope per read and write, typed-attribute look-ups behind the pool's ``is_readable`` check of
every idle connection on every request, sniffio detection) were about a fifth of the client's
CPU per request in a profile of bench/pipeline.py's HTTP tasks; httpx's cookie extraction,
which builds a urllib request for every response even though our jar refuses every cookie,
about a tenth more. Here:

* ``AsyncioBackend`` is an httpcore network backend (httpcore's documented extension point,
  ``network_backend=``) on asyncio streams: connect, read, write and TLS upgrade with asyncio's
  own timeouts, errors mapped to httpcore's exceptions as its anyio backend maps them (so httpx
  raises the same ``httpx.ConnectError``/``ReadTimeout``/... that task outcomes name);
* ``OutboundClient`` is an ``httpx.AsyncClient`` whose cookie store is always empty and keeps
  nothing: one session's task endpoint must never see a cookie another endpoint set (the
  client is shared by every session), and nothing is parsed to be thrown away.

Connections go only to addresses the outbound policy checked (service/outbound.py): a request
is sent inside ``connecting_to(target)``, and the backend connects the target's host to the
target's checked address, or refuses (``httpx.ConnectError``) a host nothing checked. The URL
keeps the host name, so the Host header, the TLS server name and certificate check, and the
pool's reuse of connections are all by name: two names served from one address never share a
connection (with the address in the URL they did, and the second name's requests went over a
TLS session whose certificate named only the first). Environment proxies (``HTTP_PROXY``...)
are not used: a proxy would connect to an address the check never saw.

Internals relied on (tests/test_outbound_http.py checks them on the installed versions): httpx's
``AsyncHTTPTransport`` sends through its ``_pool`` attribute (an httpcore connection pool),
which ``OutboundTransport`` replaces with one on ``AsyncioBackend``, built with the same
settings httpx would use; asyncio's ``StreamReader`` keeps what it read ahead in ``_buffer``
(an idle connection with buffered bytes is not reused).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx
from httpcore._utils import is_socket_readable

from service.outbound import Target

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)
"""httpcore's socket option: (level, option, value) or (level, option, None, length)."""


def _reason(error: OSError) -> str:
    """An OS error's text for httpcore's exception (its class name when it has none)."""
    return str(error) or type(error).__name__


async def _within(timeout: float | None, operation: Any) -> Any:
    """Awaits ``operation`` within ``timeout`` seconds (None: no limit)."""
    if timeout is None:
        return await operation
    async with asyncio.timeout(timeout):
        return await operation


PINNED: ContextVar[tuple[str, str] | None] = ContextVar("outbound_pinned", default=None)
"""(host as httpcore names it, checked address) of the request being sent in this context."""


@contextmanager
def connecting_to(target: Target) -> Iterator[None]:
    """Requests sent within connect ``target``'s host to its checked address (a pooled
    connection to that host, opened under an earlier check, may be reused)."""
    host = httpx.URL(target.url).raw_host.decode("ascii")
    token = PINNED.set((host, target.address))
    try:
        yield
    finally:
        PINNED.reset(token)


def checked_address(host: str) -> str:
    """The address the outbound policy checked for ``host`` in this context; refuses others."""
    pinned = PINNED.get()
    if pinned is None or pinned[0] != host:
        raise httpcore.ConnectError(
            f"{host}: no address checked by the outbound policy for it; not connected"
        )
    return pinned[1]


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection as asyncio streams; TLS upgrades it in place."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            data: bytes = await _within(timeout, self.reader.read(max_bytes))
            return data
        except TimeoutError as error:
            raise httpcore.ReadTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.ReadError(_reason(error)) from error

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self.writer.write(buffer)
            await _within(timeout, self.writer.drain())
        except TimeoutError as error:
            raise httpcore.WriteTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.WriteError(_reason(error)) from error

    async def aclose(self) -> None:
        self.writer.close()  # the transport closes the socket (after a TLS close_notify)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            upgrade = self.writer.start_tls(ssl_context, server_hostname=server_hostname)
            await _within(timeout, upgrade)
        except TimeoutError as error:
            await self.aclose()
            raise httpcore.ConnectTimeout(str(error)) from error
        except OSError as error:  # ssl.SSLError included
            await self.aclose()
            raise httpcore.ConnectError(_reason(error)) from error
        return self

    def get_extra_info(self, info: str) -> Any:
        writer = self.writer
        if info == "is_readable":  # the pool's check of an idle connection before reuse
            # asyncio reads the socket eagerly: bytes an idle connection received (a server
            # that sent more than its answer) wait in the reader's buffer, not the socket,
            # and must not be taken for the next request's answer
            buffered: Any = getattr(self.reader, "_buffer", b"")
            return (
                self.reader.at_eof()
                or bool(buffered)
                or writer.transport.is_closing()
                or is_socket_readable(writer.get_extra_info("socket"))
            )
        names = {"ssl_object": "ssl_object", "client_addr": "sockname",
                 "server_addr": "peername", "socket": "socket"}  # fmt: skip
        return writer.get_extra_info(names[info]) if info in names else None


def _apply(writer: asyncio.StreamWriter, options: Iterable[SocketOption] | None) -> None:
    sock = writer.get_extra_info("socket")
    for option in options or ():
        sock.setsockopt(*option)


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on asyncio streams (asyncio sets TCP_NODELAY itself); TCP
    connections go to the checked address of their host (``connecting_to``), never elsewhere."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = checked_address(host)
        local = (local_address, 0) if local_address else None
        try:
            reader, writer = await _within(
                timeout, asyncio.open_connection(address, port, local_addr=local)
            )
        except TimeoutError as error:
            raise httpcore.ConnectTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.ConnectError(_reason(error)) from error
        try:
            _apply(writer, socket_options)
        except OSError as error:
            writer.close()
            raise httpcore.ConnectError(_reason(error)) from error
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError(f"{path}: Unix sockets are not outbound targets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
"""httpx's default pool limits (keep-alive connections expire after 5 s idle)."""


class OutboundTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, its connection pool on ``AsyncioBackend`` (HTTP/1.1, no proxy)."""

    def __init__(
        self,
        limits: httpx.Limits = LIMITS,
        backend: httpcore.AsyncNetworkBackend | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        context = httpx.create_ssl_context(verify=verify, trust_env=False)  # loaded once
        super().__init__(verify=context, limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend or AsyncioBackend(),
        )


class NoCookies(httpx.Cookies):
    """A cookie store that stays empty: nothing is extracted from answers, nothing sent."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set_cookie_header(self, request: httpx.Request) -> None:
        return None

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        return None


class OutboundClient(httpx.AsyncClient):
    """The worker's one HTTP client: no redirects followed, no cookies kept, no env proxies."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(
            follow_redirects=False, trust_env=False, transport=transport or OutboundTransport()
        )
        self._no_cookies = NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:  # httpx's __init__ and users: ignored
        return None
