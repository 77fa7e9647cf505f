"""The engine's async facade: validate in Python, change state in one Lua script, decode.

Every method that changes a session runs exactly one script (a claim of a task with withParams
runs it twice, to merge them in Python: Lua's cjson cannot round-trip arbitrary JSON). Methods
return what the caller must do next (``Outcome.scheduled`` to enqueue, ``Outcome.finalized``
to announce).
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from service import metrics
from service.engine import checks
from service.engine.actor import ACTOR
from service.engine.batch import Batcher
from service.engine.connection import redis_client
from service.engine.errors import ConflictError, InvalidError, NotFoundError
from service.engine.keys import (
    KEY_NAMES,
    delivery_keys,
    events_key,
    idempotency_key,
    pending_keys,
    session_keys,
    sessions_index_key,
)
from service.engine.limits import Limits, check_config
from service.engine.merge import merge_kwargs
from service.engine.models import (
    RESOLVED_STATUSES,
    STATUSES,
    UID_PATTERN,
    Claim,
    Instance,
    Outcome,
    SessionConfig,
    SessionSnapshot,
    Subscription,
    SweepResult,
    TaskConfig,
    UnresolvedInstance,
    UnresolvedTask,
)
from service.engine.reader import Page, SessionReader, off_loop
from service.engine.records import (
    config_rest,
    decode_instance,
    instance_fields,
    iso_time,
    kwargs_value,
    load_record,
)
from service.engine.scripts import IndexTouch, Mark, RedisClient, ScriptRunner

_UID = re.compile(UID_PATTERN.removeprefix("^").removesuffix("$"))
_SUBSCRIPTIONS = TypeAdapter(list[Subscription])
OUTCOME_METADATA = frozenset(
    {"result", "exceptionType", "exceptionInfo", "exceptionContext", "logLevel", "cascade"}
)
"""What a run or a transition recorded (the webhooks and error listings read them): written
with a transition (complete, fail, retry, skip, a status with its metadata), never by a plain
metadata merge."""
ERROR_LEVEL = 40
MARKING_SCRIPTS = frozenset(
    {"fire", "claim", "complete", "retry", "replay", "skip", "setStatus", "finalizeIfReady"}
)
"""Scripts that can put instances in the outbox or take a lease: the session is marked in the
pending index before they run (DESIGN.md section 2), far enough ahead that a change which
schedules nothing costs no early visit (``PREMARK_MS``; a claim: its lease), and again, by the
due time + grace, after a change that did schedule something (``Engine._transition``)."""
INDEXED_SCRIPTS = frozenset(
    {"configure", "fire", "claim", "complete", "fail", "retry", "replay", "skip", "setStatus",
     "setMetadata"}
)  # fmt: skip
"""Scripts that change a session (they bump its ``updated``): the session index entry moves to
now in the same pipeline (one ZADD; ``IndexTouch``)."""
DELIVERY_SCRIPTS = frozenset({"createDelivery", "beginAttempt", "finishAttempt", "redeliver"})
"""Webhook delivery scripts (service/webhooks/store.py runs them through ``run_delivery``)."""
PREMARK_MS = 60_000
"""How far ahead a change marks its session before its script runs. The mark only matters when
the process dies between the script and its second mark; the sweeper then finds the session
this long after the change (a change that scheduled nothing: one visit, this long after)."""


@dataclass(frozen=True)
class Idempotency:
    """An Idempotency-Key for one changing call: the script stores its answer under
    ``key_digest`` with the request's ``fingerprint`` and returns the stored answer, without
    doing the work again, to a later call with the same key and fingerprint."""

    key_digest: str
    fingerprint: str
    ttl_ms: int = 24 * 3600 * 1000


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _raw_map(values: Mapping[str, Any]) -> str:
    """A map of JSON texts: Lua decodes the outer object and keeps each value as raw text."""
    return _json({key: _json(value) for key, value in values.items()})


def _task_config(stored: str | dict[str, Any]) -> TaskConfig:
    """A task config from an answer: raw JSON text (readConfig) or the object (configure)."""
    if isinstance(stored, dict):
        return TaskConfig.model_validate(stored)
    return TaskConfig.model_validate_json(stored)


def _as_list(value: Any) -> list[Any]:
    """cjson encodes an empty Lua table as {}: read it back as the empty list it was."""
    return value if isinstance(value, list) else []


def _sort_key(instance: Instance) -> tuple[str, int]:
    return instance.task, instance.number


class Engine:
    """Sessions in Redis (standalone or Cluster).

    ``finalize``: run the finalization recipe after every change (the ``finalizing`` manager).
    ``session_ttl``: seconds a session is kept after its last change (0: until deleted).
    ``lease_ms``: how long a claim holds an instance before the sweeper may re-dispatch it.
    ``sweep_grace_ms``: how long the sweeper lets an outbox entry wait for its enqueue (the
    pending index asks for a visit at its due time + this).
    ``limits``: sizes refused before any script runs (limits.py), so no script runs long.
    ``page_size``: most records one read command fetches, and most instances one listing page
    holds (reader.py).
    ``event_kinds``: the webhook event kinds a global subscription (TRIGGERS_WEBHOOKS) hears,
    comma-separated ("*": every kind; "": none): the scripts record an event only when it or
    the session's own webhooks subscribe to it.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = "trg",
        finalize: bool = True,
        session_ttl: int = 0,
        lease_ms: int = 30_000,
        sweep_grace_ms: int = 5_000,
        limits: Limits | None = None,
        page_size: int = 1000,
        event_log_cap: int = 100,
        event_kinds: str = "*",
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.finalize = finalize
        self.session_ttl = session_ttl
        self.lease_ms = lease_ms
        self.limits = limits or Limits()
        self.scripts = ScriptRunner(client)
        self.sweep_grace_ms = sweep_grace_ms
        self.pending_key, self.premarks_key, self.postmarks_key = pending_keys(prefix)
        self.reader = SessionReader(client, prefix, page_size)
        self.sessions_key = sessions_index_key(prefix)
        self.event_log_cap = event_log_cap
        self.event_kinds = event_kinds
        self.settled_runners: frozenset[str] = frozenset()
        self._settled_arg = ""
        self._postmarks: Batcher[Mark] = Batcher(self._send_postmarks, "post-marks")
        self._before_close: list[Callable[[], Awaitable[None]]] = []

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        max_connections: int = 100,
        pool_timeout: float = 10.0,
        **options: Any,
    ) -> Engine:
        """An engine on a new connection pool (``cluster``: the URL names one cluster node);
        see service/engine/connection.py for how the pool waits, heals and never re-sends."""
        client = redis_client(
            url, cluster=cluster, max_connections=max_connections, pool_timeout=pool_timeout
        )
        return cls(client, **options)

    async def load_scripts(self) -> None:
        await self.scripts.load_all()

    async def aclose(self) -> None:
        """Send what is still batched (post-marks, and the writes of hooks registered with
        ``before_close``: the dispatcher's message batches), then close the pool."""
        for hook in self._before_close:
            await hook()
        await self._postmarks.drain()
        await self.client.aclose()

    def before_close(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` at ``aclose``, before the pool closes (batched writes that use it)."""
        self._before_close.append(hook)

    def settle_at_commit(self, runner_keys: Iterable[str]) -> None:
        """Runners whose hand-over is a no-op (``external``): a changing script drops their
        due outbox entries itself (lib.lua ``schedule``) instead of leaving them for an
        ackDispatched right after, so such a change costs one script. The dispatcher sets this
        from the runner registry (dispatch.py); empty (the default): every entry stays in the
        outbox until acknowledged or claimed, which is always correct, one script more."""
        keys = frozenset(runner_keys)
        if any("," in key for key in keys):
            raise ValueError("runner keys may not contain ','")
        self.settled_runners = keys
        self._settled_arg = ",".join(sorted(keys))

    # -- plumbing ---------------------------------------------------------------------------

    def _keys(self, uid: str, idempotency: Idempotency | None) -> list[str]:
        if not isinstance(uid, str) or not _UID.fullmatch(uid):
            raise InvalidError(
                "uid: 1 to 200 characters from letters, digits and _ - . : @ + expected"
            )
        digest = idempotency.key_digest if idempotency else None
        return [
            *session_keys(uid, self.prefix),
            idempotency_key(uid, digest, self.prefix),
            *delivery_keys(uid, self.prefix),
            events_key(uid, self.prefix),
        ]

    async def _run(
        self,
        script: str,
        uid: str,
        *args: str | int | float,
        idempotency: Idempotency | None = None,
        horizon_ms: int | None = PREMARK_MS,
    ) -> Any:
        common = [
            self.session_ttl,
            "1" if self.finalize else "0",
            idempotency.fingerprint if idempotency else "",
            idempotency.ttl_ms if idempotency else 0,
        ]
        keys = self._keys(uid, idempotency)
        marking = script in MARKING_SCRIPTS or script in DELIVERY_SCRIPTS
        mark = self._mark(uid, horizon_ms) if marking and horizon_ms is not None else None
        touch = IndexTouch(self.sessions_key, uid, _now_ms()) if script in INDEXED_SCRIPTS else None
        trailing: list[str | int | float] = [
            self._settled_arg, self.event_log_cap, self.event_kinds, ACTOR.get()
        ]  # fmt: skip
        return await self.scripts.run(
            script, keys, [*common, *args, *trailing], mark=mark, touch=touch
        )

    def _mark(self, uid: str, ahead_ms: int) -> Mark:
        """Pre-mark: ``uid`` needs the sweeper ``ahead_ms`` from now (a script follows)."""
        now = _now_ms()
        return Mark(self.pending_key, self.premarks_key, uid, now + ahead_ms, now)

    async def mark_pending(self, uid: str, at_ms: int) -> None:
        """Post-mark: the session needs the sweeper by ``at_ms`` (for what a change that has
        run scheduled; never pushes an earlier need back)."""
        mark = Mark(self.pending_key, self.postmarks_key, uid, at_ms, _now_ms())
        await self.scripts.mark(mark)

    async def _send_postmarks(self, marks: list[Mark]) -> None:
        await self.scripts.mark_many(marks)

    async def drain_marks(self) -> None:
        """Wait until the post-marks of this process's changes are in the pending index."""
        await self._postmarks.drain()

    async def _transition(
        self,
        script: str,
        uid: str,
        *args: str | int | float,
        idempotency: Idempotency | None = None,
        want_record: bool = True,
    ) -> Outcome:
        """Runs a changing script and decodes its outcome: one round trip. ``want_record``
        False: ``outcome.record`` stays None (a worker's complete, which never reads it, saves
        decoding the instance).

        The post-mark (what the change put in the outbox is watched from its due time + grace)
        is queued, not awaited: it goes out with the post-marks of other requests in one
        pipeline on the next loop iteration (batch.py). Why that is safe: the pre-mark, applied
        before the script in the same round trip, already asks for a visit PREMARK_MS ahead, so
        a post-mark that is late, lost with a failed pipeline or with this process only moves
        the sweeper's visit from due + grace back to at most PREMARK_MS after the change;
        nothing is lost (the outbox entry is in Redis with the change) and ``ZADD LT`` means a
        late mark never delays an earlier need. rescorePending keeps a session whose post-mark
        has not landed yet through the recent pre-mark (its ``hold``). Entries a script settled
        at once (``settle_at_commit``) are not in the outbox and need no post-mark.
        """
        started = _now_ms()
        raw = await self._run(script, uid, *args, idempotency=idempotency)
        marker = b'"record":' if isinstance(raw, bytes) else '"record":'
        if marker not in raw:  # most answers (a fire's): validated straight from the JSON
            record = None
            outcome = Outcome.model_validate_json(raw)
        else:
            answer = orjson.loads(raw)
            record = answer.pop("record", None)
            outcome = Outcome.model_validate(answer)
        if outcome.dispatch and script in MARKING_SCRIPTS:
            self._post_mark(uid, outcome, started)
        if want_record and record is not None and outcome.instance is not None:
            outcome.record = decode_instance(outcome.instance, record)
        return outcome

    def _post_mark(self, uid: str, outcome: Outcome, started: int) -> None:
        """Queue the post-mark for the entries the script left in the outbox: all but the due
        entries of settled runners (due by the script's clock: compared with the time now,
        after the script; an entry due within the last millisecond or so, which only a retry
        with a sub-millisecond cooldown makes, is then watched through its pre-mark)."""
        settled, now = self.settled_runners, _now_ms()
        watched = [e.due for e in outcome.dispatch if e.runner not in settled or e.due > now]
        if not watched:
            return
        attention = min(watched) + self.sweep_grace_ms
        if attention < started + PREMARK_MS:  # else the pre-mark asked for no later
            self._postmarks.add(
                Mark(self.pending_key, self.postmarks_key, uid, attention, _now_ms())
            )

    # -- configuration ----------------------------------------------------------------------

    async def configure(
        self,
        uid: str,
        config: SessionConfig | Mapping[str, Any],
        *,
        replace: bool = False,
        idempotency: Idempotency | None = None,
    ) -> SessionConfig:
        """Merge (B1, PATCH) or replace (PUT) the configuration; returns the resulting one."""
        if not isinstance(config, SessionConfig):
            try:
                config = SessionConfig.model_validate(config)
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise InvalidError(f"{where}: {first['msg']}") from None
        check_config(config, self.limits)
        try:
            given = [[name, task.engine_view()] for name, task in config.tasks.items()]
            raws = [config_rest(task) for task in config.tasks.values()]
        except (PydanticSerializationError, TypeError) as error:
            raise InvalidError(f"tasks: a value is not JSON ({error})") from None
        webhooks = (
            "" if config.webhooks is None else _json([h.stored_form() for h in config.webhooks])
        )
        mode = "replace" if replace else "merge"
        answer = await self._run(
            "configure", uid, mode, _json(given), webhooks, self.limits.max_tasks,
            self.limits.max_tasks_per_trigger, *raws, idempotency=idempotency,
        )  # fmt: skip
        return self._decode_config(answer)

    @staticmethod
    def _decode_config(answer: str) -> SessionConfig:
        data = orjson.loads(answer)
        tasks = {name: _task_config(raw) for name, raw in _as_list(data["tasks"])}
        webhooks = data.get("webhooks")
        return SessionConfig(
            tasks=tasks,
            webhooks=_SUBSCRIPTIONS.validate_json(webhooks) if webhooks else None,
        )

    async def get_config(self, uid: str) -> SessionConfig:
        return self._decode_config(await self._run("readConfig", uid))

    # -- firing and running -----------------------------------------------------------------

    async def fire(
        self,
        uid: str,
        trigger: str,
        kwargs: Mapping[str, Any] | None = None,
        *,
        idempotency: Idempotency | None = None,
    ) -> Outcome:
        """Fire ``trigger`` (section D). Creates the session if needed."""
        try:
            checks.name(trigger, "trigger")
            payload = checks.payload(kwargs, "kwargs")
            outcome = await self._transition(
                "fire", uid, trigger, payload, self.limits.max_instances,
                self.limits.max_open_instances, idempotency=idempotency,
            )  # fmt: skip
        except (InvalidError, NotFoundError, ConflictError):
            metrics.count_refused_fire()
            raise
        metrics.count_fire(bool(outcome.scheduled))
        return outcome

    async def claim(
        self, uid: str, name: str, *, lease_ms: int | None = None, with_instance: bool = True
    ) -> Claim:
        """Take a scheduled instance to running under a new lease, recording actualKwargs (E5).
        ``with_instance`` False: ``claim.instance`` stays None (a worker reads only the kwargs, the
        task and ``scheduledMs``: building the public model, timestamps as ISO text, was a
        tenth of a no-op task's worker CPU).

        One script reads and claims: when the task has no withParams (E1 is then the identity)
        the script records the instance kwargs as they are stored. Otherwise it answers
        ``merge``; the kwargs are merged here (E1, in Python: Lua's cjson cannot round-trip
        arbitrary JSON) and claimed with the config version they came from, which the script
        checks (a task reconfigured in between: read and merge again).
        """
        checks.instance(name)
        lease = checks.lease(lease_ms, self.lease_ms)
        merged, version = "", ""
        for _ in range(10):
            token = secrets.token_hex(16)
            # horizon: the index watches a dead worker's lease from its expiry
            reply = await self._run(
                "claim", uid, name, token, lease, merged, version, horizon_ms=lease
            )
            encoded, raw_record, raw_task, raw_version = reply
            answer = orjson.loads(encoded)
            state = answer["state"]
            if state == "merge":
                instance = decode_instance(name, raw_record)
                task = TaskConfig.model_validate_json(raw_task) if raw_task else None
                merged = _json(merge_kwargs(task.withParams if task else {}, instance.kwargs))
                version = raw_version or ""
                continue
            if state == "stale":
                merged, version = "", ""
                continue
            claim = Claim.model_validate(answer)
            if claim.state == "claimed":
                record = load_record(raw_record)
                meta = record["meta"]
                claim.kwargs = kwargs_value(meta["actualKwargs"])
                claim.scheduledMs = None if "parent" in meta else record["ts"].get("scheduled")
                claim.task = TaskConfig.model_validate_json(raw_task) if raw_task else None
                if with_instance:
                    claim.instance = Instance(**instance_fields(name, record))
            return claim
        raise InvalidError(f"instance {name}: its task keeps being reconfigured; claim again")

    async def renew_lease(
        self, uid: str, name: str, token: str, *, lease_ms: int | None = None
    ) -> int:
        """Extend a running instance's lease; returns the new expiry (ms since the epoch)."""
        checks.instance(name)
        lease = checks.lease(lease_ms, self.lease_ms)
        answer = await self._run("renewLease", uid, name, checks.token(token), lease)
        return int(orjson.loads(answer)["expires"])

    async def complete(
        self,
        uid: str,
        name: str,
        token: str,
        result: Mapping[str, Any] | None = None,
        *,
        log_level: int = 0,
        want_record: bool = True,
    ) -> Outcome:
        """running -> finished with ``result`` and its cascade, atomically (F2, F4).
        ``want_record`` False: no ``outcome.record`` (see ``_transition``)."""
        checks.instance(name)
        payload = checks.payload(result, "result")
        level = checks.level(log_level)
        token = checks.token(token)
        return await self._transition(
            "complete", uid, name, token, payload, level, want_record=want_record
        )

    async def fail(
        self,
        uid: str,
        name: str,
        token: str,
        exception_type: str,
        exception_info: str,
        context: Mapping[str, Any] | None = None,
        *,
        log_level: int = 0,
    ) -> Outcome:
        """running -> failed with the cause (F3). No cascade."""
        checks.instance(name)
        payload = checks.payload(context, "exceptionContext")
        return await self._transition(
            "fail", uid, name, checks.token(token), str(exception_type),
            str(exception_info), payload, checks.level(log_level),
        )  # fmt: skip

    async def retry(
        self,
        uid: str,
        name: str,
        token: str,
        *,
        cooldown: float = 0.0,
        kwargs: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        cause: tuple[str, str, Mapping[str, Any] | None] | None = None,
        log_level: int = 0,
    ) -> Outcome:
        """Retry requested by the running task (G): replayed + clone due after ``cooldown``,
        or failed with MaxRetriesExceeded past the task's ``maxRetries``.
        ``kwargs`` None keeps the instance's kwargs, else replaces the whole map (G7)."""
        checks.instance(name)
        if (
            isinstance(cooldown, bool)
            or not isinstance(cooldown, int | float)
            or not math.isfinite(cooldown)
            or not 0 <= cooldown <= 10**8
        ):
            raise InvalidError("cooldown: a number of seconds from 0 to 10**8 expected")
        replacement = "" if kwargs is None else _raw_map(checks.kwargs_map(kwargs, "kwargs"))
        meta = _raw_map(checks.metadata(metadata))
        cause_type, cause_info, cause_context = cause or ("", "", None)
        context = checks.payload(cause_context, "exceptionContext")
        return await self._transition(
            "retry", uid, name, checks.token(token), _json(cooldown), replacement, meta,
            str(cause_type), str(cause_info), context, checks.level(log_level),
            self.limits.max_instances,
        )  # fmt: skip

    async def replay(
        self,
        uid: str,
        name: str,
        kwargs: Mapping[str, Any] | None = None,
        *,
        idempotency: Idempotency | None = None,
    ) -> Outcome:
        """H1: a failed instance becomes replayed and its clone is scheduled at once.
        ``kwargs`` None keeps the parent's; a map (even {}) replaces them whole."""
        checks.instance(name)
        replacement = "" if kwargs is None else _raw_map(checks.kwargs_map(kwargs, "kwargs"))
        return await self._transition(
            "replay", uid, name, replacement, self.limits.max_instances, idempotency=idempotency
        )

    async def skip(
        self,
        uid: str,
        name: str,
        *,
        cascade: bool = False,
        result: Mapping[str, Any] | None = None,
        idempotency: Idempotency | None = None,
    ) -> Outcome:
        """H2: a failed instance becomes skipped; with ``cascade`` its task's name fires."""
        checks.instance(name)
        payload = checks.payload(result, "result")
        flag = "1" if cascade else "0"
        return await self._transition("skip", uid, name, flag, payload, idempotency=idempotency)

    async def set_status(
        self,
        uid: str,
        name: str,
        status: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        cascade: bool = False,
        cascade_kwargs: Mapping[str, Any] | None = None,
        token: str | None = None,
        idempotency: Idempotency | None = None,
    ) -> Outcome:
        """H3 (operators, external workers: no transition check) or F6 (``token``: the running
        task chooses its end)."""
        checks.instance(name)
        if status not in STATUSES:
            raise InvalidError(f"status: one of {', '.join(STATUSES)} expected")
        meta = _raw_map(checks.metadata(metadata))
        kwargs = checks.payload(cascade_kwargs, "cascadeKwargs")
        return await self._transition(
            "setStatus", uid, name, status, meta, "1" if cascade else "0", kwargs,
            "" if token is None else checks.token(token) or "-",
            idempotency=idempotency,
        )  # fmt: skip

    async def set_metadata(
        self,
        uid: str,
        name: str,
        metadata: Mapping[str, Any],
        *,
        idempotency: Idempotency | None = None,
    ) -> Instance:
        """H4: shallow-merge metadata, any status. Keys the engine keeps or a transition
        records are refused (checks.RESERVED_METADATA, OUTCOME_METADATA): a merged ``depth`` would
        reset the retry budget."""
        checks.instance(name)
        if not isinstance(metadata, Mapping):
            raise InvalidError("metadata: a JSON object expected")
        reserved = checks.RESERVED_METADATA | OUTCOME_METADATA
        raw = _raw_map(checks.metadata(dict(metadata), reserved=reserved))
        outcome = await self._transition("setMetadata", uid, name, raw, idempotency=idempotency)
        assert outcome.record is not None
        return outcome.record

    async def mark_logs_resolved(
        self, uid: str, name: str, *, idempotency: Idempotency | None = None
    ) -> Instance:
        """H5."""
        return await self.set_metadata(uid, name, {"logsResolved": True}, idempotency=idempotency)

    async def finalize_if_ready(self, uid: str) -> Outcome:
        """L1 on demand (every transition already runs it when ``finalize`` is on)."""
        return await self._transition("finalizeIfReady", uid)

    async def ack_dispatched(self, uid: str, names: Iterable[str]) -> int:
        """Drop entries a runner took for good from the outbox (those already due)."""
        self._keys(uid, None)
        if isinstance(names, str):
            raise InvalidError("names: a list of instance names expected")
        names = [
            name if isinstance(name, str) and name.startswith("@") else checks.instance(name)
            for name in names
        ]
        if not names:
            return 0
        return int(await self._run("ackDispatched", uid, *names))

    async def sweep(self, uid: str, grace_ms: int) -> SweepResult:
        """What the sweeper must hand to workers again in this session, and when the session
        next needs the sweeper (``next``; None: nothing outstanding)."""
        return SweepResult.model_validate_json(await self._run("sweepSession", uid, grace_ms))

    async def run_delivery(
        self, script: str, uid: str, *args: str | int | float, attention_in_ms: int | None
    ) -> Any:
        """Runs one of the webhook delivery scripts on the session's keys (the delivery store
        owns their meaning). ``attention_in_ms``: the script makes an attempt due within that
        many ms, so the session is marked in the pending index for then, before the script
        runs (None: it makes nothing due)."""
        if script not in DELIVERY_SCRIPTS:
            raise InvalidError(f"script: one of {', '.join(sorted(DELIVERY_SCRIPTS))} expected")
        return await self._run(script, uid, *args, horizon_ms=attention_in_ms)

    async def defer_pending(self, uid: str, at_ms: int) -> None:
        """Push a session whose sweep failed back to ``at_ms`` (only later, never earlier), so
        that it does not stand first in every pass."""
        await self.client.zadd(self.pending_key, {uid: at_ms}, xx=True, gt=True)

    async def due_sessions(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        """Sessions of the pending index due by ``now_ms`` (earliest first), with their score:
        a range read of the index, O(log n + limit) whatever the number of pending sessions."""
        await self.drain_marks()
        found: list[Any] = await self.client.zrangebyscore(
            self.pending_key, "-inf", now_ms, start=0, num=limit, withscores=True
        )
        return [(str(uid), int(score)) for uid, score in found]

    async def pending_sessions(self, limit: int = 1000) -> list[tuple[str, int]]:
        """Sessions of the pending index, earliest need first, with when they need the sweeper
        (ms). For inspection; the sweeper reads ``due_sessions``."""
        await self.drain_marks()
        found: list[Any] = await self.client.zrange(self.pending_key, 0, limit - 1, withscores=True)
        return [(str(uid), int(score)) for uid, score in found]

    async def rescore_pending(
        self,
        uid: str,
        score_read: int,
        next_ms: int | None,
        read_at_ms: int,
        *,
        settle_ms: int,
        hold_ms: int,
    ) -> bool:
        """After a sweep of ``uid``: the session next needs the sweeper at ``next_ms``, or
        leaves the index (None), unless a change marked it since (lua/standalone/
        rescorePending.lua). Returns whether it stays in the index."""
        args: list[str | int | float] = [
            uid, score_read, "" if next_ms is None else next_ms, read_at_ms, settle_ms, hold_ms,
        ]  # fmt: skip
        keys = [self.pending_key, self.premarks_key, self.postmarks_key]
        kept = await self.scripts.run("rescorePending", keys, args)
        return bool(kept)

    async def delete(self, uid: str, *, idempotency: Idempotency | None = None) -> bool:
        """Remove the session; True if it existed."""
        return str(await self._run("delete", uid, idempotency=idempotency)) == "1"

    # -- reads ------------------------------------------------------------------------------

    async def snapshot(self, uid: str, *, max_instances: int | None = None) -> SessionSnapshot:
        """The session's state. ``max_instances``: include at most that many instances (the
        first page of the listing; ``instancesNext`` continues it), so that one request
        decodes a bounded amount; None: all of them, read page by page."""
        keys = self._keys(uid, None)
        head = await self.reader.head(uid, self._run)
        latest = head.latest
        if latest is None:
            latest = await self.reader.latest(self.reader.keys(uid))
        following: str | None = None
        if max_instances is not None and head.instance_count > max_instances:
            page = await self.reader.page_of(
                uid, status=None, task=None, cursor=None, limit=max_instances
            )
            records, following = page.records, page.next
        elif head.instances is not None:
            records = list(head.instances.items())
        else:
            records = list((await self.reader.scan_hash(keys[KEY_NAMES.index("inst")])).items())

        def build() -> SessionSnapshot:
            meta = head.meta
            webhooks = meta.get("webhooks")
            return SessionSnapshot(
                uid=uid,
                tasks={name: TaskConfig.model_validate_json(raw) for name, raw in head.tasks},
                instances={
                    name: decode_instance(name, raw)
                    for name, raw in sorted(records, key=lambda p: _instance_order(p[0]))
                },
                latestKwargs={key: orjson.loads(raw) for key, raw in latest.items()},
                finalized=meta.get("finalized") == "1",
                finalizedAt=int(meta["finalizedAt"]) if "finalizedAt" in meta else None,
                created=int(meta["created"]),
                updated=int(meta["updated"]),
                version=int(meta["version"]),
                sessionId=meta.get("sid"),
                webhooks=_SUBSCRIPTIONS.validate_json(webhooks) if webhooks else None,
                instanceCount=head.instance_count,
                instancesNext=following,
            )

        return await off_loop(len(records) + len(latest), build)

    def _check_filters(self, status: str | None, task: str | None) -> None:
        if status is not None and status not in STATUSES:
            raise InvalidError(f"status: one of {', '.join(STATUSES)} expected")
        if task is not None:
            checks.name(task, "task")

    async def instances(
        self, uid: str, *, status: str | None = None, task: str | None = None
    ) -> list[Instance]:
        """Every instance matching the filters, sorted by task then number (read page by
        page; for big sessions prefer instances_page)."""
        self._check_filters(status, task)
        self._keys(uid, None)
        records = await self.reader.every_instance(uid, status, task)
        return await off_loop(len(records), lambda: _decoded(records, status))

    async def instances_page(
        self,
        uid: str,
        *,
        status: str | None = None,
        task: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> tuple[list[Instance], str | None]:
        """One page of instances and the cursor of the next (None: this was the last). Without
        ``status``: by task name, then number. With it, pages follow the status index: by task
        name, then instance name as text (t#10 before t#2); a listing that fits in one page is
        sorted by task then number."""
        self._check_filters(status, task)
        self._keys(uid, None)
        page_max = self.reader.page
        if limit is None:
            limit = page_max
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= self.reader.page
        ):
            raise InvalidError(f"limit: a whole number from 1 to {page_max} expected")
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidError("cursor: the next cursor of a previous page expected")
        page: Page = await self.reader.page_of(
            uid, status=status, task=task, cursor=cursor, limit=limit
        )
        one_page = cursor is None and page.next is None  # sorted as a whole, as always
        instances = await off_loop(
            len(page.records), lambda: _decoded(page.records, status, sort=one_page)
        )
        return instances, page.next

    async def instance(self, uid: str, name: str) -> Instance:
        checks.instance(name)
        keys = self._keys(uid, None)
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(keys[KEY_NAMES.index("meta")])
        pipe.hget(keys[KEY_NAMES.index("inst")], name)
        exists, raw = await pipe.execute()
        if not exists:
            raise NotFoundError("session does not exist")
        if raw is None:
            raise NotFoundError(f"instance {name} does not exist")
        return decode_instance(name, raw)

    async def unresolved(
        self, uid: str, *, full: bool = True
    ) -> tuple[list[UnresolvedTask], list[UnresolvedInstance]]:
        """K2 and K1, each with what it is still waiting for (reader.py: read in pages).
        ``full`` False: the instances carry only name, task, status and waitingFor (what the
        unresolved-tasks view needs; decoding every record is most of a big read's cost)."""
        self._keys(uid, None)
        return await self.reader.unresolved(uid, full=full)

    async def unresolved_tasks(self, uid: str) -> list[UnresolvedTask]:
        return (await self.unresolved(uid, full=False))[0]

    async def unresolved_instances(self, uid: str) -> list[UnresolvedInstance]:
        return (await self.unresolved(uid))[1]

    async def instances_with_unresolved_logs(self, uid: str) -> list[Instance]:
        """I6: relevant logs (not abandoned, replayed or skipped) at ERROR or above, not marked
        resolved."""
        return [
            instance
            for instance in await self.instances(uid)
            if instance.status not in ("abandoned", "replayed", "skipped")
            and int(instance.metadata.get("logLevel") or 0) >= ERROR_LEVEL
            and instance.metadata.get("logsResolved") is not True
        ]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _decoded(
    records: list[tuple[str, str]], status: str | None, *, sort: bool = True
) -> list[Instance]:
    """Decoded (``sort``: by task then number); records whose status changed between the index
    read and the record read are left out of a status listing."""
    instances = (decode_instance(name, raw) for name, raw in records)
    kept = [i for i in instances if status is None or i.status == status]
    return sorted(kept, key=_sort_key) if sort else kept


def _instance_order(name: str) -> tuple[str, int]:
    task, _, number = name.rpartition("#")
    return task, int(number)


__all__ = ["RESOLVED_STATUSES", "Engine", "decode_instance", "iso_time"]
