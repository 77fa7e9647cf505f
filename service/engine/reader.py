"""Read views of a session that stay short however big it grows (issue 14 item 12).

Reads never change state, so they need not be one script: each is a few plain commands (HGETALL
of what the limits bound, HMGET and ZRANGEBYLEX pages of at most ``page`` entries, HSCAN) sent
from Python, so no read holds Redis for more than one page. A session at most one page big is
still read in one consistent step (the bounded readSession script); a bigger one is read page by
page while changes may land between pages (each record read is whole and current).

Decoding is the expensive part of a big read (orjson, then pydantic); beyond ``INLINE_DECODE``
records it runs in a worker thread, so the event loop keeps serving other requests.

Listing cursors are opaque to clients: base64url of ``["n", task, number]`` (walking tasks by
name and numbers in order) or ``["s", index member]`` (walking the status index).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from service.engine.errors import InvalidError, NotFoundError
from service.engine.keys import (
    COUNT_MARK,
    KEY_NAMES,
    LATEST_MARK,
    REST_MARK,
    counted_task,
    is_def_field,
    latest_fields,
    session_keys,
    whole_meta,
)
from service.engine.models import TaskConfig, UnresolvedInstance, UnresolvedTask
from service.engine.records import instance_fields, load_def, load_record, task_config

INLINE_DECODE = 200
"""Records decoded on the event loop; more go to a thread (its hop costs ~0.1 ms)."""
UNRESOLVED = ("unstarted", "scheduled", "running", "failed")
_MAX_BYTE = b"\xff"  # sorts after every UTF-8 byte: the end of a lexicographic prefix range

T = TypeVar("T")


async def off_loop(count: int, work: Callable[[], T]) -> T:
    """Run ``work`` (decoding ``count`` records) inline when small, else in a thread."""
    if count <= INLINE_DECODE:
        return work()
    return await asyncio.to_thread(work)


def encode_cursor(*parts: str | int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str) -> list[Any]:
    """The parts of a cursor of this ``kind`` of listing; InvalidError for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        parts = None
    valid = isinstance(parts, list) and parts and parts[0] == kind
    if valid and kind == "n":
        valid = len(parts) == 3 and isinstance(parts[1], str) and isinstance(parts[2], int)
    elif valid:
        valid = len(parts) == 2 and isinstance(parts[1], str)
    if not valid:
        raise InvalidError("cursor: not a cursor of this listing (filters must stay the same)")
    return list(parts[1:])


@dataclass(frozen=True)
class Page:
    """One page of a listing: (name, raw record) pairs in listing order, and the next cursor."""

    records: list[tuple[str, str]]
    next: str | None


@dataclass(frozen=True)
class Head:
    """What readSession returns: every small part of the session, and the instances and latest
    kwargs when they fit in one page (None: read them in pages)."""

    meta: dict[str, str]
    tasks: list[tuple[str, str]]
    latest: dict[str, str] | None
    instance_count: int
    instances: dict[str, str] | None


def _pairs(flat: Iterable[Any]) -> dict[str, Any]:
    items = list(flat)
    return dict(zip(items[::2], items[1::2], strict=True))


def tasks_in_order(
    tasks: Mapping[str, str], defs: Mapping[str, dict[str, Any]]
) -> list[tuple[str, TaskConfig]]:
    """(name, configuration) in configuration order (each def's ``pos``), from the decoded
    defs (records.load_def) and the remainders ``tasks`` stores."""
    order = sorted(defs, key=lambda name: int(defs[name].get("pos") or 0))
    return [(name, task_config(defs[name], tasks.get(name))) for name in order]


class SessionReader:
    """Plain-command reads of one deployment's sessions (standalone Redis or Cluster)."""

    def __init__(self, client: Any, prefix: str, page: int = 1000) -> None:
        self.client = client
        self.prefix = prefix
        self.page = page

    def keys(self, uid: str) -> dict[str, str]:
        return dict(zip(KEY_NAMES, session_keys(uid, self.prefix), strict=True))

    async def _exists(self, keys: Mapping[str, str]) -> None:
        if not await self.client.exists(keys["meta"]):
            raise NotFoundError("session does not exist")

    # -- whole-hash reads -------------------------------------------------------------------

    async def scan_hash(self, key: str, match: str | None = None) -> dict[str, str]:
        """Every field of a hash (matching ``match``) with HSCAN, ``page`` at a time (each
        call is short)."""
        found: dict[str, str] = {}
        cursor: int = 0
        while True:
            cursor, chunk = await self.client.hscan(key, cursor, match=match, count=self.page)
            found.update(chunk)
            if int(cursor) == 0:
                return found

    async def latest(self, keys: Mapping[str, str]) -> dict[str, str]:
        """Every trigger's latest kwargs, page by page: meta's marked fields (keys.LATEST_MARK)
        and, for a session of the earlier layout, its own hash."""
        found = await self.scan_hash(keys["latest"])
        for field, value in (await self.scan_hash(keys["meta"], LATEST_MARK + "*")).items():
            found[field[len(LATEST_MARK) :]] = value
        return found

    async def hmget(self, key: str, fields: list[str]) -> list[str | None]:
        """HMGET in pages of ``page`` fields."""
        values: list[str | None] = []
        for first in range(0, len(fields), self.page):
            values.extend(await self.client.hmget(key, fields[first : first + self.page]))
        return values

    async def head(self, uid: str, run_script: Callable[..., Any]) -> Head:
        """The bounded readSession script; NotFoundError for an unknown session."""
        flat_meta, tasks, earlier, count, instances = await run_script(
            "readSession", uid, self.page
        )
        meta, latest = latest_fields(_pairs(flat_meta))
        return Head(
            meta=whole_meta(meta),
            tasks=list(_pairs(tasks).items()),  # in configuration order (readSession)
            latest=None if earlier is None else {**_pairs(earlier), **latest},
            instance_count=int(count),
            instances=None if instances is None else _pairs(instances),
        )

    # -- listings ---------------------------------------------------------------------------

    async def page_of(
        self,
        uid: str,
        *,
        status: str | None,
        task: str | None,
        cursor: str | None,
        limit: int,
    ) -> Page:
        """One page of instances: by the status index when ``status`` is given (by task name,
        then instance name as text), else by task name then instance number."""
        keys = self.keys(uid)
        await self._exists(keys)
        if status is not None:
            return await self._status_page(keys, status, task, cursor, limit)
        return await self._numbered_page(keys, task, cursor, limit)

    async def _status_page(
        self, keys: Mapping[str, str], status: str, task: str | None, cursor: str | None,
        limit: int,
    ) -> Page:  # fmt: skip
        prefix = f"{status}:{task}#" if task is not None else f"{status}:"
        start = f"({decode_cursor(cursor, 's')[0]}" if cursor else f"[{prefix}"
        end = b"[" + prefix.encode() + _MAX_BYTE
        members = await self.client.zrangebylex(keys["idx"], start, end, 0, limit + 1)
        if not members and not await self.client.exists(keys["idx"]):
            members = await self._members_read(keys, [status], task, start[1:], limit + 1)
        more = len(members) > limit
        members = members[:limit]
        names = [member[len(status) + 1 :] for member in members]
        raws = await self.hmget(keys["inst"], names)
        records = [(n, raw) for n, raw in zip(names, raws, strict=True) if raw is not None]
        following = encode_cursor("s", members[-1]) if more else None
        return Page(records, following)

    async def _numbered_page(
        self, keys: Mapping[str, str], task: str | None, cursor: str | None, limit: int
    ) -> Page:
        if task is not None:
            count = await self.client.hget(keys["defs"], COUNT_MARK + task)
            if count is None:  # the earlier layout (lib.lua adopt_config_layout)
                count = await self.client.hget(keys["counts"], task)
            counts = {task: int(count)} if count is not None else {}
        else:
            counts = {name: int(n) for name, n in (await self.scan_hash(keys["counts"])).items()}
            for field, n in (await self.scan_hash(keys["defs"], COUNT_MARK + "*")).items():
                counted = counted_task(field)
                if counted is not None:
                    counts[counted] = int(n)
        at_task, at_number = decode_cursor(cursor, "n") if cursor else ("", 0)
        names: list[str] = []
        following: str | None = None
        for name in sorted(counts):
            if name < at_task:
                continue
            first = at_number if name == at_task else 0
            for number in range(first, counts[name]):
                if len(names) == limit:
                    following = encode_cursor("n", name, number)
                    break
                names.append(f"{name}#{number}")
            if following is not None:
                break
        raws = await self.hmget(keys["inst"], names)
        records = [(n, raw) for n, raw in zip(names, raws, strict=True) if raw is not None]
        return Page(records, following)

    async def every_instance(self, uid: str, status: str | None, task: str | None) -> list[Any]:
        """Every instance matching the filters, page after page."""
        records: list[tuple[str, str]] = []
        cursor: str | None = None
        while True:
            page = await self.page_of(uid, status=status, task=task, cursor=cursor, limit=self.page)
            records.extend(page.records)
            if page.next is None:
                return records
            cursor = page.next

    async def _members_read(
        self, keys: Mapping[str, str], statuses: Iterable[str], task: str | None, after: str,
        count: int | None,
    ) -> list[str]:  # fmt: skip
        """The status index's members ("<status>:<name>") as the records give them, for a
        session that keeps no index (it holds a few instances: lib.lua INDEX_FROM), in the
        index's order: by status as given, then by text; those above ``after`` (a member),
        at most ``count``. The records are read in pages: should the index be built
        meanwhile, they are still the truth."""
        wanted = list(statuses)
        found = [
            f"{record['status']}:{name}"
            for name, raw in (await self.scan_hash(keys["inst"])).items()
            if (record := load_record(raw))["status"] in wanted
            and (task is None or name.rsplit("#", 1)[0] == task)
        ]
        found.sort(key=lambda member: (wanted.index(member.partition(":")[0]), member))
        found = [member for member in found if member > after]
        return found if count is None else found[:count]

    # -- unresolved -------------------------------------------------------------------------

    async def unresolved_names(self, keys: Mapping[str, str]) -> list[str]:
        """Names of the instances in an unresolved status, from the index, page by page."""
        if not await self.client.exists(keys["idx"]):
            members = await self._members_read(keys, UNRESOLVED, None, "", None)
            return [member.partition(":")[2] for member in members]
        names: list[str] = []
        for status in UNRESOLVED:
            start = f"[{status}:"
            end = f"[{status}:".encode() + _MAX_BYTE
            while True:
                members = await self.client.zrangebylex(keys["idx"], start, end, 0, self.page)
                names.extend(member[len(status) + 1 :] for member in members)
                if len(members) < self.page:
                    break
                start = f"({members[-1]}"
        return names

    async def unresolved(
        self, uid: str, *, full: bool = True
    ) -> tuple[list[UnresolvedTask], list[UnresolvedInstance]]:
        """K2 and K1 (SEMANTICS.md): tasks with no instance or an unresolved one, and unresolved
        instances, each with the triggers it still misses."""
        keys = self.keys(uid)
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(keys["meta"])
        pipe.hgetall(keys["tasks"])
        pipe.hgetall(keys["defs"])
        exists, tasks, stored_defs = await pipe.execute()
        if not exists:
            raise NotFoundError("session does not exist")
        defs = {name: load_def(raw) for name, raw in stored_defs.items() if is_def_field(name)}
        counted = {counted_task(field) for field in stored_defs} - {None}
        for name in defs:  # a short rest is kept beside the def (lib.lua rest_of)
            rest = stored_defs.get(REST_MARK + name)
            if rest is not None:
                tasks[name] = rest
        names = await self.unresolved_names(keys)
        raws = await self.hmget(keys["inst"], names)
        ordered = tasks_in_order(tasks, defs)
        never = [name for name, _ in ordered]
        unknown = [name for name in never if name not in counted]
        # Counts of the earlier layout's own hash (lib.lua adopt_config_layout)
        started = await self.hmget(keys["counts"], unknown) if unknown else []
        without = {name for name, count in zip(unknown, started, strict=True) if count is None}
        wanted = sorted({t for name in without for t in defs[name]["after"]})
        # the earlier layout's own hash first: a script moving it into meta meanwhile leaves
        # each trigger in one of the two reads (as ``latest`` reads them)
        earlier = await self.hmget(keys["latest"], wanted)
        marked = await self.hmget(keys["meta"], [LATEST_MARK + t for t in wanted])
        pairs = zip(wanted, marked, earlier, strict=True)
        fired = {t: m if m is not None else e for t, m, e in pairs}
        records = [(n, raw) for n, raw in zip(names, raws, strict=True) if raw is not None]

        def decode() -> tuple[list[UnresolvedTask], list[UnresolvedInstance]]:
            return build_unresolved(ordered, defs, without, fired, records, full=full)

        return await off_loop(len(records), decode)


def _missing(record: Mapping[str, Any], after: list[str]) -> list[str]:
    kwargs = record.get("kwargs") or {}
    return [t for t in after if t not in kwargs]


def build_unresolved(
    ordered: list[tuple[str, TaskConfig]],
    defs: Mapping[str, dict[str, Any]],
    without: set[str],
    fired: Mapping[str, str | None],
    records: list[tuple[str, str]],
    *,
    full: bool = True,
) -> tuple[list[UnresolvedTask], list[UnresolvedInstance]]:
    """The unresolved view from what was read (pure, so it can run in a thread). ``full``
    False: instances hold only name, task, status and waitingFor (built without validation)."""
    afters = {name: list(definition["after"]) for name, definition in defs.items()}
    instances: list[UnresolvedInstance] = []
    waiting_of: dict[str, set[str]] = {}
    for name, raw in records:
        record = load_record(raw)
        record.setdefault("task", name.rsplit("#", 1)[0])
        if record["status"] not in UNRESOLVED:
            continue  # resolved between the index read and the record read
        after = afters.get(record["task"])
        waiting = _missing(record, after) if record["status"] == "unstarted" and after else []
        waiting_of.setdefault(record["task"], set()).update(waiting)
        if full:
            fields = instance_fields(name, record)
            instances.append(UnresolvedInstance(**fields, waitingFor=waiting))
        else:
            light = UnresolvedInstance.model_construct(  # every field given: no factory runs
                name=name, task=record["task"], status=record["status"], kwargs={},
                abandonState=[], metadata={}, waitingFor=waiting,
            )  # fmt: skip
            instances.append(light)
    instances.sort(key=lambda i: (i.task, i.number))
    tasks: list[UnresolvedTask] = []
    for name, config in ordered:
        after = afters[name]
        if name in without:
            waiting = [t for t in after if fired.get(t) is None] or after
        elif name in waiting_of:
            waiting = [t for t in after if t in waiting_of[name]]
        else:
            continue
        tasks.append(UnresolvedTask(name=name, config=config, waitingFor=waiting))
    return tasks, instances
