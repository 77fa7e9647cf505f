"""HTTP tasks (API.md, "HTTP tasks"): POST the context to ``run`` and read the outcome.

Request: JSON ``{"session", "instance", "task", "attempt", "kwargs"}`` with
``Idempotency-Key: <uid>/<instance>/<sessionId>`` (the session's incarnation: a session deleted
and created again under its UID never repeats a key; a non-ASCII instance name is
percent-encoded there, see header_safe) and the Standard Webhooks signature headers.
Answer: ``Triggers-Outcome: retry`` or 429/503 -> retry (``Retry-After`` seconds as cooldown, a
body ``{"kwargs": ...}`` replaces the kwargs); ``Triggers-Outcome: skip`` -> skipped (a JSON
object body is merged into metadata); other 2xx -> finished with the JSON object body (empty:
{}) as result; anything else, timeouts and refused connections -> failed with the cause.

Timeouts: TRIGGERS_HTTP_CONNECT_TIMEOUT / TRIGGERS_HTTP_READ_TIMEOUT, or per task with the
custom directives ``connectTimeout`` / ``readTimeout`` (seconds), each clamped to
TRIGGERS_HTTP_MAX_TIMEOUT, which is also the total deadline of the whole request (resolving,
connecting and every read): per-read timeouts alone let an endpoint that sends a byte now and
then hold a worker thread for ever. Bodies beyond TRIGGERS_HTTP_MAX_RESPONSE_BYTES fail the
instance. The URL is checked by outbound.py first.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from service.engine import Claim
from service.outbound import OutboundPolicy, OutboundRefused
from service.outbound_http import OutboundClient, connecting_to
from service.signing import Signer
from service.worker.outcome import TaskOutcome

EXCERPT = 2000


class ResponseTooLarge(Exception):
    pass


def header_safe(text: str) -> str:
    """``text`` for an HTTP header, which carries ASCII only: names may be any Unicode
    (``vérifier``, ``比较``), so every non-ASCII character and ``%`` is percent-encoded
    (UTF-8); ASCII names are sent unchanged."""
    return quote(text, safe=_HEADER_SAFE)


_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def _seconds(value: Any, default: float, most: float) -> float:
    """A per-task timeout directive: positive seconds (else the default), at most ``most``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return min(float(value), most)
    return min(default, most)


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise ResponseTooLarge(f"response body over {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0  # an HTTP date: treated as "now" (rare for task endpoints)


def _object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object ({} when empty), None when it is not one."""
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class HttpTaskRunner:
    def __init__(
        self,
        client: OutboundClient,
        policy: OutboundPolicy,
        signer: Signer,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_timeout: float,
        max_response_bytes: int,
    ) -> None:
        self.client = client
        self.policy = policy
        self.signer = signer
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_timeout = max_timeout
        self.max_response_bytes = max_response_bytes

    async def run(self, uid: str, name: str, claim: Claim) -> TaskOutcome:
        """POST the context and read the outcome, all within the total deadline."""
        assert claim.task is not None
        try:
            async with asyncio.timeout(self.max_timeout):
                return await self._run(uid, name, claim)
        except TimeoutError:
            return TaskOutcome.failure(
                "triggers.HttpDeadlineExceeded",
                f"POST {claim.task.run}: no complete answer within {self.max_timeout:g} s "
                "(TRIGGERS_HTTP_MAX_TIMEOUT)",
                {"url": claim.task.run},
            )

    async def _run(self, uid: str, name: str, claim: Claim) -> TaskOutcome:
        assert claim.task is not None
        task = claim.task
        try:
            target = await self.policy.resolve(task.run)
        except OutboundRefused as refused:
            return TaskOutcome.failure("triggers.OutboundRefused", str(refused), {"url": task.run})
        body = orjson.dumps({
            "session": uid, "instance": name, "task": name.rsplit("#", 1)[0],
            "attempt": claim.attempt or 1, "kwargs": claim.kwargs or {},
        }).decode()  # fmt: skip
        # sessionId: never repeats for a re-created UID; header_safe: headers carry ASCII only
        key = f"{uid}/{header_safe(name)}/{claim.sessionId or ''}"
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            **self.signer.headers(f"task_{key}/{claim.attempt or 1}", body),
        }
        extra = task.model_extra or {}
        timeout = httpx.Timeout(
            _seconds(extra.get("readTimeout"), self.read_timeout, self.max_timeout),
            connect=_seconds(extra.get("connectTimeout"), self.connect_timeout, self.max_timeout),
        )
        try:
            request = self.client.build_request(
                "POST", target.url, content=body, headers=headers, timeout=timeout
            )
            with connecting_to(target):
                response = await self.client.send(request, stream=True)
            try:
                content = await _read_capped(response, self.max_response_bytes)
            finally:
                await response.aclose()
        except ResponseTooLarge as error:
            return TaskOutcome.failure("triggers.ResponseTooLarge", str(error), {"url": task.run})
        except httpx.HTTPError as error:
            kind = type(error).__name__
            return TaskOutcome.failure(f"httpx.{kind}", f"{kind}: {error}", {"url": task.run})
        return self.interpret(response, content, task.run)

    @staticmethod
    def interpret(response: httpx.Response, content: bytes, url: str) -> TaskOutcome:
        said = response.headers.get("triggers-outcome", "").strip().lower()
        status = response.status_code
        if said == "retry" or status in (429, 503):
            replacement = _object(content)
            kwargs = replacement.get("kwargs") if replacement else None
            return TaskOutcome(
                "retry",
                cooldown=_retry_after(response.headers.get("retry-after")),
                kwargs=kwargs if isinstance(kwargs, dict) else None,
                metadata={"httpStatus": status},
            )
        if said == "skip":
            return TaskOutcome("skip", metadata=_object(content) or {})
        if 200 <= status < 300:
            result = _object(content)
            if result is None:
                return TaskOutcome.failure(
                    "triggers.InvalidTaskResult",
                    "a 2xx answer must have a JSON object body (or none)",
                    {"status": status, "body": content[:EXCERPT].decode(errors="replace")},
                )
            return TaskOutcome("finished", result=result)
        return TaskOutcome.failure(
            "triggers.HttpTaskFailed",
            f"POST {url} answered {status}",
            {"status": status, "body": content[:EXCERPT].decode(errors="replace")},
        )
