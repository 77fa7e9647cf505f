"""Redis connections that pack commands with hiredis (C) instead of redis-py's Python packer.

redis-py's asyncio connection packs every command in Python; our scripts take eleven keys and a
few arguments, and profiling a fire showed that packing them took about a third of the client
side of the call. hiredis (already a dependency, for parsing) ships ``pack_command``; the sync
redis-py client uses it, the asyncio one does not yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hiredis
from redis.asyncio.connection import Connection


class HiredisPackingConnection(Connection):
    async def send_packed_command(
        self, command: str | bytes | Iterable[bytes], check_health: bool = True
    ) -> None:
        """A pooled connection the server closed meanwhile (its reader already saw the end of
        the stream) is reconnected BEFORE anything is written to it: the command then either
        reaches a live server or fails to connect, and a failure is known to precede the send
        (the API answers 503, safe to retry, not outcome-unknown; see api/problems.py)."""
        reader = self._reader
        if reader is not None and reader.at_eof():
            await self.disconnect(nowait=True)
        await super().send_packed_command(command, check_health)

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " in first:  # "CONFIG GET": split like redis-py does
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type hiredis does not pack: let redis-py encode it
            return super().pack_command(*args)
