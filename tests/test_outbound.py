"""Outbound protection: closed internal addresses, the allow-list, connecting to the checked IP."""

from __future__ import annotations

import pytest

from service.outbound import OutboundPolicy, OutboundRefused


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


async def test_target_keeps_the_path_and_puts_the_address_in_place_of_the_host() -> None:
    target = await OutboundPolicy("localhost").resolve("http://localhost:8123/a/b?c=d")
    assert target.host == "localhost"
    assert target.url.endswith(":8123/a/b?c=d")
    assert target.address in ("127.0.0.1", "::1")
