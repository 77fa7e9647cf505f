"""The ``dramatiq`` runner (the default ``using``): sends instances to the run_instance actor.

The actor module sets up the broker when imported, so it is imported on first use: a process
that never dispatches to Dramatiq (one that only serves reads) never connects to a broker.
"""

from __future__ import annotations

import asyncio


class DramatiqRunner:
    """Sends the instance to the run_instance actor, delayed until it is due."""

    key = "dramatiq"
    acknowledges = False  # the claim drops the outbox entry; until then the sweeper watches

    async def dispatch(self, uid: str, name: str, delay_ms: int) -> None:
        from service.worker.actors import run_instance

        await asyncio.to_thread(
            run_instance.send_with_options, args=(uid, name), delay=delay_ms or None
        )
