"""Start-up races (issue 14, item 11): a cold process whose first work arrives on many threads
or as many concurrent sends at once must lose nothing.

* The storage registry is filled lazily from entry points, and the fill is not thread-safe:
  ``build_engine`` on many threads of a fresh process saw an empty table (``RegistryKeyError:
  'redis'``) unless every read goes through ``service.registry``'s lock.
* ``ActorSender`` used to set its client before the broker's enqueue script was loaded, so the
  concurrent first sends after a start failed ``assert self._sha is not None``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from redis.asyncio import Redis

from service.worker.runners import ActorSender

PROCESSES = 6
COLD_START = """
import sys, threading
from service.factory import build_engine
from service.settings import Settings

THREADS = 24
barrier = threading.Barrier(THREADS)
errors = []

def first_message():
    barrier.wait()
    try:
        build_engine(Settings(), sys.argv[1])
    except Exception as error:
        errors.append(repr(error))

threads = [threading.Thread(target=first_message) for _ in range(THREADS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(len(errors), errors[:1])
sys.exit(1 if errors else 0)
"""


def test_cold_process_builds_engines_on_many_threads_at_once(redis_url: str) -> None:
    """Fresh interpreters (cold registries), each building engines on 24 threads at once."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", COLD_START, redis_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(PROCESSES)
    ]
    outputs = [process.communicate(timeout=120)[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0] * PROCESSES, outputs


async def test_concurrent_first_sends_of_a_cold_sender_all_arrive(redis_url: str) -> None:
    namespace = f"race-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=redis_url, namespace=namespace)  # type: ignore[no-untyped-call]

    def noop(index: int) -> None:
        pass

    actor = dramatiq.actor(noop, broker=broker, queue_name="cold")
    sender = ActorSender()
    sends = 50  # under the pool's connection cap (its exhaustion is another item)
    results = await asyncio.gather(
        *(sender.send(actor, (index,), 0) for index in range(sends)), return_exceptions=True
    )
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    await sender.drain()  # sends are batched, not awaited by send()
    client = Redis.from_url(redis_url)
    try:
        queued = await client.hlen(f"{namespace}:cold.msgs")
        await client.delete(f"{namespace}:cold.msgs", f"{namespace}:cold")
    finally:
        await client.aclose()
        broker.close()
    assert errors == []
    assert queued == sends
