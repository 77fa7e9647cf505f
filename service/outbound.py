"""Outbound protection for HTTP tasks and webhooks (DESIGN.md section 4).

A URL is called only if every address its host resolves to is public, or the operator's
allow-list (``TRIGGERS_OUTBOUND_ALLOW``) names it. Private, loopback, link-local (cloud
metadata), CGNAT, multicast, reserved and IPv6 unique-local addresses are closed by default.
The host is resolved once and the connection goes to that checked address (the Host header
and TLS server name stay the original host), so DNS rebinding cannot swap it; redirects are
never followed (the callers' httpx clients have follow_redirects off).

Allow-list entries, comma-separated: a URL prefix (``http://localhost:9000/tasks/``), a host
(``localhost``, ``tasks.internal``), a ``host:port``, an address or a network in CIDR form
(``10.0.0.0/8``, ``::1``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

CGNAT = ipaddress.ip_network("100.64.0.0/10")


class OutboundRefused(Exception):
    """The URL is not allowed: it is never called."""


@dataclass(frozen=True)
class Target:
    """Where to connect: ``url`` with the checked address in place of the host."""

    url: str
    host: str
    address: str
    netloc: str
    """The original ``host[:port]``: the Host header to send."""

    @property
    def extensions(self) -> dict[str, str]:
        """httpx request extensions: TLS checks the original host, not the address."""
        return {"sni_hostname": self.host} if self.url.startswith("https") else {}


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv4Address) and address in CGNAT)
    )


class OutboundPolicy:
    def __init__(self, allow: str | None = None) -> None:
        self.prefixes: list[str] = []
        self.hosts: set[str] = set()
        self.networks: list[Network] = []
        for entry in (part.strip() for part in (allow or "").split(",")):
            if not entry:
                continue
            if "://" in entry:
                self.prefixes.append(entry)
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.lower())

    def _allowed_by_list(self, url: str, host: str, port: int, address: IPAddress) -> bool:
        return (
            any(url.startswith(prefix) for prefix in self.prefixes)
            or host in self.hosts
            or f"{host}:{port}" in self.hosts
            or any(address in network for network in self.networks)
        )

    async def resolve(self, url: str) -> Target:
        """The checked target of ``url``; OutboundRefused when any address is closed."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OutboundRefused(f"{url!r}: only http(s) URLs with a host can be called")
        host = parts.hostname.lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as error:
            raise OutboundRefused(f"{host}: cannot be resolved ({error})") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        for address in addresses:
            if not is_public(address) and not self._allowed_by_list(url, host, port, address):
                raise OutboundRefused(
                    f"{host} resolves to {address}, a private, loopback, link-local or "
                    "otherwise internal address; TRIGGERS_OUTBOUND_ALLOW must name it"
                )
        chosen = str(addresses[0])
        literal = f"[{chosen}]" if ":" in chosen else chosen
        netloc = f"{literal}:{parts.port}" if parts.port else literal
        original = parts.netloc.rsplit("@", 1)[-1]
        return Target(urlunsplit(parts._replace(netloc=netloc)), host, chosen, original)
