"""Outbound protection for HTTP tasks and webhooks (DESIGN.md section 4).

A URL is called only if every address its host resolves to is public, or the operator's
allow-list (``TRIGGERS_OUTBOUND_ALLOW``) names it. Private, loopback, link-local (cloud
metadata), CGNAT, multicast, reserved and IPv6 unique-local addresses are closed by default,
and so is every IPv6 address that embeds such an IPv4 address (IPv4-mapped, -compatible and
-translated, 6to4, Teredo, NAT64, ISATAP): the network may route those to the embedded address.
The host is resolved once and the connection goes to that checked address (the URL, its Host
header and TLS server name keep the host name: service/outbound_http.py), so DNS rebinding
cannot swap it; redirects are never followed (the worker's client has follow_redirects off).

URLs are parsed once, here, and what is checked is what is sent: a URL with userinfo
(``user@host``) is refused outright (``http://allowed:9000@169.254.169.254/`` reads as the
allowed host to a string prefix but connects to the other one), and the path is normalized
(RFC 3986 dot-segments removed) before it is compared and sent, so ``/tasks/../admin`` is
``/admin`` for the check as for the server.

Allow-list entries, comma-separated: a URL prefix (``http://localhost:9000/tasks/``: same
scheme, host and port, and a path that starts with the same whole segments), a host
(``localhost``, ``tasks.internal``), a ``host:port``, an address or a network in CIDR form
(``10.0.0.0/8``, ``::1``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT, RFC 2765
ISATAP_IDS = (0x00005EFE, 0x02005EFE)
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}


class OutboundRefused(Exception):
    """The URL is not allowed: it is never called."""


@dataclass(frozen=True)
class Target:
    """A checked URL: send ``url`` (the host name kept, the path normalized) connected to
    ``address``, the address checked for ``host`` (service/outbound_http.py connecting_to)."""

    url: str
    host: str
    address: str


@dataclass(frozen=True)
class ParsedUrl:
    """An http(s) URL split into what the checks compare: never built from a raw string."""

    parts: SplitResult
    host: str
    port: int
    path: str
    """The path with dot-segments removed: the one checked and the one sent."""

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments, percent-decoded (``/a/b/`` -> ``("a", "b", "")``)."""
        return tuple(unquote(part) for part in self.path.split("/")[1:])


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, also for percent-encoded dots (``%2e%2e``), which servers
    commonly decode before they route."""
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        plain = unquote(segment)
        if plain == ".":
            if last:
                output.append("")
        elif plain == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    joined = "/".join(output)
    if path.startswith("/") and not joined.startswith("/"):
        joined = "/" + joined
    return joined or "/"


def parse_url(url: str) -> ParsedUrl:
    """The parsed http(s) URL; ValueError (a sentence for the caller) when it is not one we
    would call: another scheme, no host, userinfo, a bad port, spaces or control characters."""
    if not isinstance(url, str) or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("must be an http(s) URL without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"is not a valid URL ({error})") from None
    if parts.scheme not in SCHEMES:
        raise ValueError("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError("must not carry userinfo (user:password@): it hides the real host")
    if "\\" in parts.netloc or not parts.hostname:
        raise ValueError("must name a host")
    path = remove_dot_segments(parts.path or "/")
    return ParsedUrl(
        parts=parts._replace(path=path, fragment=""),
        host=parts.hostname.lower(),
        port=port if port is not None else DEFAULT_PORTS[parts.scheme],
        path=path,
    )


def url_problem(url: str) -> str | None:
    """Why ``url`` can never be called (for refusing it at configure time), or None."""
    try:
        parse_url(url)
    except ValueError as error:
        return str(error)
    return None


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries, that a translator or tunnel may route to."""
    found: list[ipaddress.IPv4Address] = []
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in IPV4_COMPATIBLE or address in IPV4_TRANSLATED or address in NAT64:
        found.append(low32)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if (int(address) >> 32) & 0xFFFFFFFF in ISATAP_IDS:
        found.append(low32)
    return found


def _is_public_v4(address: ipaddress.IPv4Address) -> bool:
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address in CGNAT
    )


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv4Address):
        return _is_public_v4(address)
    if address in NAT64_LOCAL:
        return False
    embedded = embedded_ipv4(address)
    if embedded:
        return all(_is_public_v4(v4) for v4 in embedded)
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_site_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True)
class UrlPrefix:
    """An allow-list URL entry: scheme, host and port equal, path segments a prefix."""

    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, entry: str) -> UrlPrefix:
        try:
            parsed = parse_url(entry)
        except ValueError as error:
            raise ValueError(f"TRIGGERS_OUTBOUND_ALLOW entry {entry!r} {error}") from None
        if parsed.parts.query:
            raise ValueError(f"TRIGGERS_OUTBOUND_ALLOW entry {entry!r}: no query expected")
        segments = parsed.segments
        if segments and segments[-1] == "":
            segments = segments[:-1]  # "/tasks/" and "/tasks" allow the same subtree
        return cls(parsed.parts.scheme, parsed.host, parsed.port, segments)

    def matches(self, url: ParsedUrl) -> bool:
        segments = url.segments
        return (
            url.parts.scheme == self.scheme
            and url.host == self.host
            and url.port == self.port
            and segments[: len(self.segments)] == self.segments
            and not any(_ambiguous(segment) for segment in segments)
        )


def _ambiguous(segment: str) -> bool:
    """A (decoded) segment some servers read as several or as a dot-segment: an encoded ``/``,
    a backslash, or ``..;x`` (path parameters, as Tomcat reads them). Never under a prefix."""
    return "/" in segment or "\\" in segment or segment.split(";", 1)[0] in (".", "..")


class OutboundPolicy:
    def __init__(self, allow: str | None = None) -> None:
        """Parses the allow-list (ValueError for an entry that is not understood)."""
        self.prefixes: list[UrlPrefix] = []
        self.hosts: set[str] = set()
        self.networks: list[Network] = []
        for entry in (part.strip() for part in (allow or "").split(",")):
            if not entry:
                continue
            if "://" in entry:
                self.prefixes.append(UrlPrefix.parse(entry))
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.lower())

    def _allowed_by_list(self, url: ParsedUrl, address: IPAddress) -> bool:
        return (
            any(prefix.matches(url) for prefix in self.prefixes)
            or url.host in self.hosts
            or f"{url.host}:{url.port}" in self.hosts
            or any(address in network for network in self.networks)
        )

    async def resolve(self, url: str) -> Target:
        """The checked target of ``url``; OutboundRefused when any address is closed."""
        try:
            parsed = parse_url(url)
        except ValueError as error:
            raise OutboundRefused(f"{url!r} {error}") from None
        host = parsed.host
        addresses = await _addresses(host, parsed.port)
        for address in addresses:
            if not is_public(address) and not self._allowed_by_list(parsed, address):
                raise OutboundRefused(
                    f"{host} resolves to {address}, a private, loopback, link-local or "
                    "otherwise internal address; TRIGGERS_OUTBOUND_ALLOW must name it"
                )
        return Target(urlunsplit(parsed.parts), host, str(addresses[0]))


async def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses ``host`` stands for. An IP address in its plain form is taken as it is:
    getaddrinfo would answer it unchanged, but from a thread of the loop's executor (a thread
    hop on every HTTP task to such a URL). Other forms (``127.1``, scoped IPv6) are resolved."""
    if "%" not in host:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise OutboundRefused(f"{host}: cannot be resolved ({error})") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_allow_list(value: str) -> str:
    """``TRIGGERS_OUTBOUND_ALLOW`` parses (checked with the settings, at start)."""
    OutboundPolicy(value)
    return value
