"""The HTTP client's cheap path is installed (speed lives in bench/, this guards the
dependency): httpcore asks sniffio which async library runs, several times per request; without
sniffio each ask is a failed import that searches sys.path (~50 us each)."""

from __future__ import annotations

import asyncio

import sniffio


def test_sniffio_is_installed_and_sees_asyncio() -> None:
    async def ask() -> str:
        return str(sniffio.current_async_library())

    assert asyncio.run(ask()) == "asyncio"
