"""``Idempotency-Key`` on mutating requests, as the IETF httpapi draft says.

* Same key, same request (method, path and body): the first answer again, without doing the work
  again. Successful answers are stored by the engine's scripts in the same atomic step as the
  change (service/engine/lua/includes/lib.lua); refusals (4xx) are stored here.
* Same key while the first request is still in flight: 409.
* Same key with another request: 422.
* Records live in the session's hash slot and are kept ``TRIGGERS_IDEMPOTENCY_TTL`` seconds
  (default 24 hours).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

import orjson
from fastapi import Request

from service.api.problems import FieldError, ProblemError, from_engine_error
from service.engine import Engine, EngineError, Idempotency
from service.engine.keys import idempotency_key

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
IN_FLIGHT_MS = 60_000
_NO_KEY: AbstractAsyncContextManager[None] = nullcontext()


def _digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


class IdempotencyStore:
    """Begins and ends idempotent requests for one engine."""

    def __init__(self, engine: Engine, ttl_seconds: int) -> None:
        self.engine = engine
        self.ttl_ms = ttl_seconds * 1000

    def _record_key(self, uid: str, digest: str) -> str:
        return idempotency_key(uid, digest, self.engine.prefix)

    def request(
        self, uid: str, request: Request
    ) -> AbstractAsyncContextManager[Idempotency | None]:
        """A context giving the Idempotency to pass to the engine (None without a key: the
        common case costs nothing). Raises a ProblemError for a key in flight or reused, and
        stores the refusals raised inside the block."""
        key = request.headers.get("idempotency-key")
        if key is None:
            return _NO_KEY
        return self._keyed(uid, key, request)

    @asynccontextmanager
    async def _keyed(
        self, uid: str, key: str, request: Request
    ) -> AsyncIterator[Idempotency | None]:
        if not _KEY.match(key):
            raise ProblemError(
                "validation-error",
                "Idempotency-Key: 1 to 255 visible ASCII characters expected",
                errors=[FieldError(field="header.Idempotency-Key", message="invalid key")],
            )
        digest = _digest(key.encode())
        body = await request.body()  # read once by FastAPI already; cached on the request
        parts = [request.method.encode(), request.url.path.encode(), body]
        fingerprint = _digest(b"\n".join(parts))
        record_key = self._record_key(uid, digest)
        stored = await self.engine.client.get(record_key)
        if stored is not None:
            record = orjson.loads(stored)
            if record.get("fp") != fingerprint:
                raise _reused()
            if "problem" in record:
                stored_problem = record["problem"]
                raise ProblemError(
                    stored_problem["kind"],
                    stored_problem["detail"],
                    errors=[FieldError.model_validate(e) for e in stored_problem["errors"]],
                    headers={"Idempotent-Replayed": "true"},
                )
            # A stored success: the engine's script returns it without doing the work again.
            yield Idempotency(digest, fingerprint, self.ttl_ms)
            return
        lock = record_key + ":lock"
        if not await self.engine.client.set(lock, "1", nx=True, px=IN_FLIGHT_MS):
            raise ProblemError(
                "idempotency-in-flight",
                "a request with this Idempotency-Key is still being processed; retry later",
                headers={"Retry-After": "1"},
            )
        try:
            yield Idempotency(digest, fingerprint, self.ttl_ms)
        except EngineError as error:
            problem = from_engine_error(error)
            await self._store_problem(record_key, fingerprint, problem)
            raise problem from None
        except ProblemError as problem:
            await self._store_problem(record_key, fingerprint, problem)
            raise
        finally:
            await self.engine.client.delete(lock)

    async def _store_problem(
        self, record_key: str, fingerprint: str, problem: ProblemError
    ) -> None:
        """A refusal changed nothing; it is kept so that a repeat gets the same answer."""
        stored = {
            "kind": problem.kind,
            "detail": problem.detail,
            "errors": [error.model_dump() for error in problem.errors],
        }
        record = {"fp": fingerprint, "problem": stored}
        await self.engine.client.set(record_key, orjson.dumps(record), nx=True, px=self.ttl_ms)


def _reused() -> ProblemError:
    return ProblemError(
        "idempotency-key-reused",
        "this Idempotency-Key was used with another request (method, path or body differ)",
        errors=[FieldError(field="header.Idempotency-Key", message="reused with another body")],
    )
