"""Bad input to every facade method: a typed error, and the session exactly as it was.

Every refusal is checked the same way (``assert_refused``): the session's snapshot (including
``version`` and ``updated``) and the raw content of every one of its Redis keys (which also
covers the outbox and the lease index, not part of the snapshot) are read before and after the
call and must be identical. A refusal for a session that does not exist must not create it.

The session built by ``build`` holds one instance in every status, so each refusal is tried
against the statuses that matter: see ``Ctx``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from service.engine import (
    ConflictError,
    Engine,
    EngineError,
    InvalidError,
    NotFoundError,
)
from service.engine.keys import session_keys

UID = "errors:1"
OTHER = "errors:bystander"

CONFIG: dict[str, Any] = {
    "tasks": {
        "t_a": {"after": ["go"], "run": "P", "withParams": {"cfg": {"k": 1}}},  # running
        "t_s": {"after": ["go"], "run": "P"},  # scheduled
        "t_f": {"after": ["go"], "run": "X"},  # failed
        "t_d": {"after": ["go"], "run": "N"},  # finished
        "t_r": {"after": ["go"], "run": "X"},  # #0 replayed, #1 scheduled
        "t_k": {"after": ["go"], "run": "X"},  # skipped
        "t_u": {"after": ["go", "later"], "run": "P"},  # unstarted
        "t_n": {"after": ["never"], "unless": ["go"], "run": "P"},  # abandoned
        "t_e": {"after": [], "andEvery": "page", "run": "P"},  # no instance yet
    }
}

STATUS_OF = {
    "t_a#0": "running",
    "t_s#0": "scheduled",
    "t_f#0": "failed",
    "t_d#0": "finished",
    "t_r#0": "replayed",
    "t_r#1": "scheduled",
    "t_k#0": "skipped",
    "t_u#0": "unstarted",
    "t_n#0": "abandoned",
}
NOT_FAILED = [name for name, status in STATUS_OF.items() if status != "failed"]
NOT_RUNNING = [name for name, status in STATUS_OF.items() if status != "running"]


@dataclass
class Ctx:
    """The session under test: ``token`` is t_a#0's live lease; ``stale`` the lease token
    t_d#0 held before it finished, ``failed_token`` the one t_f#0 held before it failed."""

    uid: str
    token: str
    stale: str
    failed_token: str


Call = Callable[[Engine, Ctx], Awaitable[Any]]


async def _claimed(engine: Engine, uid: str, name: str) -> str:
    claim = await engine.claim(uid, name)
    assert claim.state == "claimed" and claim.token, claim
    return claim.token


async def build(engine: Engine, uid: str = UID) -> Ctx:
    """A session with one instance in every status (STATUS_OF), checked before use."""
    await engine.configure(uid, CONFIG)
    await engine.fire(uid, "go", {"g": 1})
    token = await _claimed(engine, uid, "t_a#0")
    failed_token = await _claimed(engine, uid, "t_f#0")
    await engine.fail(uid, "t_f#0", failed_token, "builtins.RuntimeError", "boom", {"c": 1})
    stale = await _claimed(engine, uid, "t_d#0")
    await engine.complete(uid, "t_d#0", stale, {"r": 1})
    r_token = await _claimed(engine, uid, "t_r#0")
    await engine.fail(uid, "t_r#0", r_token, "builtins.RuntimeError", "boom")
    await engine.replay(uid, "t_r#0")
    k_token = await _claimed(engine, uid, "t_k#0")
    await engine.fail(uid, "t_k#0", k_token, "builtins.RuntimeError", "boom")
    await engine.skip(uid, "t_k#0")
    snapshot = await engine.snapshot(uid)
    assert {name: i.status for name, i in snapshot.instances.items()} == STATUS_OF
    assert not snapshot.finalized
    return Ctx(uid=uid, token=token, stale=stale, failed_token=failed_token)


async def raw_state(engine: Engine, uid: str) -> dict[str, Any]:
    """Every key of the session as Redis holds it (type, content, TTL)."""
    client = engine.client
    state: dict[str, Any] = {}
    for key in session_keys(uid, engine.prefix):
        kind = await client.type(key)
        value: Any
        if kind == "hash":
            value = await client.hgetall(key)
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            value = await client.get(key)
        elif kind == "set":
            value = sorted(await client.smembers(key))
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        else:
            value = None
        state[key] = (kind, value, await client.ttl(key))
    return state


async def assert_refused(
    engine: Engine,
    uid: str,
    coro_factory: Callable[[], Awaitable[Any]],
    error_type: type[EngineError] | tuple[type[EngineError], ...],
) -> EngineError:
    """The call raises ``error_type`` and session ``uid`` (which exists) is left untouched."""
    before = await engine.snapshot(uid)
    raw_before = await raw_state(engine, uid)
    with pytest.raises(error_type) as caught:
        await coro_factory()
    after = await engine.snapshot(uid)
    assert after == before, "a refused call changed the session"
    assert after.version == before.version and after.updated == before.updated
    assert await raw_state(engine, uid) == raw_before, "a refused call changed a key"
    return caught.value


async def assert_absent(engine: Engine, uid: str) -> None:
    """Session ``uid`` does not exist: no snapshot and not one of its keys."""
    with pytest.raises(NotFoundError):
        await engine.snapshot(uid)
    for key in session_keys(uid, engine.prefix):
        assert await engine.client.exists(key) == 0, key


async def assert_refused_no_session(
    engine: Engine,
    uid: str,
    coro_factory: Callable[[], Awaitable[Any]],
    error_type: type[EngineError],
) -> EngineError:
    """The call raises ``error_type`` for a session that does not exist and does not create it."""
    with pytest.raises(error_type) as caught:
        await coro_factory()
    await assert_absent(engine, uid)
    return caught.value


# ---------------------------------------------------------------------------------------------
# Invalid session UIDs: every method
# ---------------------------------------------------------------------------------------------

BAD_UIDS = ["bad uid", "a{b}", "a}b", "{x}", "", "a" * 201, "a/b", "tab\tuid", "a,b", "nul\x00"]

VALID_TASKS = {"tasks": {"t_x": {"after": ["go"], "run": "P"}}}

# Every facade method with otherwise valid arguments: only the uid is wrong.
BY_UID: dict[str, Callable[[Engine, str], Awaitable[Any]]] = {
    "configure": lambda e, uid: e.configure(uid, VALID_TASKS),
    "configure_replace": lambda e, uid: e.configure(uid, VALID_TASKS, replace=True),
    "get_config": lambda e, uid: e.get_config(uid),
    "fire": lambda e, uid: e.fire(uid, "go", {"v": 1}),
    "claim": lambda e, uid: e.claim(uid, "t_s#0"),
    "renew_lease": lambda e, uid: e.renew_lease(uid, "t_a#0", "token"),
    "complete": lambda e, uid: e.complete(uid, "t_a#0", "token", {}),
    "fail": lambda e, uid: e.fail(uid, "t_a#0", "token", "builtins.RuntimeError", "boom"),
    "retry": lambda e, uid: e.retry(uid, "t_a#0", "token"),
    "replay": lambda e, uid: e.replay(uid, "t_f#0"),
    "skip": lambda e, uid: e.skip(uid, "t_f#0"),
    "set_status": lambda e, uid: e.set_status(uid, "t_f#0", "finished"),
    "set_metadata": lambda e, uid: e.set_metadata(uid, "t_f#0", {"note": 1}),
    "mark_logs_resolved": lambda e, uid: e.mark_logs_resolved(uid, "t_f#0"),
    "finalize_if_ready": lambda e, uid: e.finalize_if_ready(uid),
    "ack_dispatched": lambda e, uid: e.ack_dispatched(uid, ["t_s#0"]),
    "delete": lambda e, uid: e.delete(uid),
    "snapshot": lambda e, uid: e.snapshot(uid),
    "instances": lambda e, uid: e.instances(uid),
    "instances_filtered": lambda e, uid: e.instances(uid, status="failed", task="t_f"),
    "instance": lambda e, uid: e.instance(uid, "t_f#0"),
    "unresolved": lambda e, uid: e.unresolved(uid),
    "unresolved_tasks": lambda e, uid: e.unresolved_tasks(uid),
    "unresolved_instances": lambda e, uid: e.unresolved_instances(uid),
    "instances_with_unresolved_logs": lambda e, uid: e.instances_with_unresolved_logs(uid),
}


async def _all_keys(engine: Engine) -> list[str]:
    return sorted(await engine.client.keys(f"{engine.prefix}:*"))


@pytest.mark.parametrize("bad_uid", BAD_UIDS, ids=repr)
@pytest.mark.parametrize("method", list(BY_UID))
async def test_invalid_uid_is_refused_by_every_method(
    engine: Engine, method: str, bad_uid: str
) -> None:
    ctx = await build(engine)
    keys_before = await _all_keys(engine)

    await assert_refused(engine, ctx.uid, lambda: BY_UID[method](engine, bad_uid), InvalidError)

    assert await _all_keys(engine) == keys_before, "a refused call wrote a key somewhere"


@pytest.mark.parametrize("bad_uid", ["nl\n", "a" * 200 + "\n"], ids=["nl", "200+nl"])
@pytest.mark.parametrize("method", ["fire", "configure", "snapshot", "claim", "delete"])
async def test_uid_with_a_trailing_newline_is_invalid(
    engine: Engine, method: str, bad_uid: str
) -> None:
    """A control character anywhere in the UID is refused (API.md), the last place included."""
    ctx = await build(engine)
    keys_before = await _all_keys(engine)

    await assert_refused(engine, ctx.uid, lambda: BY_UID[method](engine, bad_uid), InvalidError)

    assert await _all_keys(engine) == keys_before, "a refused call wrote a key somewhere"


@pytest.mark.parametrize("bad_uid", ["bad uid", "a{b}", "", "a" * 201, "a/b"], ids=repr)
async def test_ack_of_no_names_still_checks_the_uid(engine: Engine, bad_uid: str) -> None:
    ctx = await build(engine)
    await assert_refused(engine, ctx.uid, lambda: engine.ack_dispatched(bad_uid, []), InvalidError)


@pytest.mark.parametrize("bad_uid", [None, 42, b"bytes", ["a"]], ids=repr)
@pytest.mark.parametrize("method", ["fire", "snapshot", "delete", "claim", "configure"])
async def test_uid_that_is_not_a_string_is_refused(
    engine: Engine, method: str, bad_uid: Any
) -> None:
    ctx = await build(engine)
    await assert_refused(engine, ctx.uid, lambda: BY_UID[method](engine, bad_uid), InvalidError)


@pytest.mark.parametrize(
    "method", ["configure", "fire", "snapshot", "replay", "set_metadata", "ack_dispatched"]
)
@pytest.mark.parametrize("bad_uid", ["a{b}", "a" * 201, "a/b"], ids=["braces", "201", "slash"])
async def test_invalid_uid_on_both_backends(any_engine: Engine, method: str, bad_uid: str) -> None:
    ctx = await build(any_engine)
    await assert_refused(
        any_engine, ctx.uid, lambda: BY_UID[method](any_engine, bad_uid), InvalidError
    )


async def test_longest_valid_uid_is_accepted(engine: Engine) -> None:
    """Control: 200 characters of every allowed kind pass, so the 201 case tests the bound."""
    uid = ("aZ9_-.:@+" * 30)[:200]
    await engine.fire(uid, "go")
    assert (await engine.snapshot(uid)).latestKwargs == {"go": {}}


# ---------------------------------------------------------------------------------------------
# Unknown session
# ---------------------------------------------------------------------------------------------

READS = [
    "get_config",
    "snapshot",
    "instances",
    "instances_filtered",
    "instance",
    "unresolved",
    "unresolved_tasks",
    "unresolved_instances",
    "instances_with_unresolved_logs",
    "finalize_if_ready",
]
INSTANCE_WRITES = [
    "claim",
    "renew_lease",
    "complete",
    "fail",
    "retry",
    "replay",
    "skip",
    "set_status",
    "set_metadata",
    "mark_logs_resolved",
]


@pytest.mark.parametrize("method", READS + INSTANCE_WRITES)
async def test_unknown_session_is_not_found(engine: Engine, method: str) -> None:
    await build(engine, OTHER)  # another session exists; it must not matter
    before = await engine.snapshot(OTHER)

    await assert_refused_no_session(
        engine, "nobody:here", lambda: BY_UID[method](engine, "nobody:here"), NotFoundError
    )

    assert await engine.snapshot(OTHER) == before


@pytest.mark.parametrize("method", ["snapshot", "get_config", "instance", "replay", "complete"])
async def test_unknown_session_is_not_found_on_both_backends(
    any_engine: Engine, method: str
) -> None:
    await assert_refused_no_session(
        any_engine, "nobody:here", lambda: BY_UID[method](any_engine, "nobody:here"), NotFoundError
    )


async def test_unknown_session_delete_and_ack_are_harmless(engine: Engine) -> None:
    """Not errors (idempotent clean-ups), but they must not create the session either."""
    assert await engine.delete("nobody:here") is False
    assert await engine.ack_dispatched("nobody:here", ["t_s#0"]) == 0
    assert await engine.ack_dispatched("nobody:here", []) == 0
    await assert_absent(engine, "nobody:here")


# ---------------------------------------------------------------------------------------------
# Unknown and malformed instance names
# ---------------------------------------------------------------------------------------------

BY_NAME: dict[str, Callable[[Engine, Ctx, str], Awaitable[Any]]] = {
    "claim": lambda e, c, n: e.claim(c.uid, n),
    "renew_lease": lambda e, c, n: e.renew_lease(c.uid, n, c.token),
    "complete": lambda e, c, n: e.complete(c.uid, n, c.token, {"r": 1}),
    "fail": lambda e, c, n: e.fail(c.uid, n, c.token, "builtins.RuntimeError", "boom"),
    "retry": lambda e, c, n: e.retry(c.uid, n, c.token),
    "replay": lambda e, c, n: e.replay(c.uid, n),
    "skip": lambda e, c, n: e.skip(c.uid, n, cascade=True),
    "set_status": lambda e, c, n: e.set_status(c.uid, n, "finished", cascade=True),
    "set_status_token": lambda e, c, n: e.set_status(c.uid, n, "skipped", token=c.token),
    "set_metadata": lambda e, c, n: e.set_metadata(c.uid, n, {"note": "x"}),
    "mark_logs_resolved": lambda e, c, n: e.mark_logs_resolved(c.uid, n),
    "instance": lambda e, c, n: e.instance(c.uid, n),
}

UNKNOWN_NAMES = ["t_a#1", "t_a#99", "nope#0", "t_e#0", "t_a#01"]
MALFORMED_NAMES = [
    "t_a",
    "t#x",
    "#0",
    "t_a#",
    "a#b#0",
    "t_a#-1",
    "t_a#0 ",
    "",
    "t_a#1.5",
]


@pytest.mark.parametrize("name", UNKNOWN_NAMES)
@pytest.mark.parametrize("method", list(BY_NAME))
async def test_unknown_instance_is_not_found(engine: Engine, method: str, name: str) -> None:
    ctx = await build(engine)
    await assert_refused(engine, ctx.uid, lambda: BY_NAME[method](engine, ctx, name), NotFoundError)


@pytest.mark.parametrize("name", MALFORMED_NAMES, ids=repr)
@pytest.mark.parametrize("method", [*BY_NAME, "ack_dispatched"])
async def test_malformed_instance_name_is_invalid(engine: Engine, method: str, name: str) -> None:
    ctx = await build(engine)

    def call() -> Awaitable[Any]:
        if method == "ack_dispatched":
            return engine.ack_dispatched(ctx.uid, ["t_s#0", name])
        return BY_NAME[method](engine, ctx, name)

    await assert_refused(engine, ctx.uid, call, InvalidError)


@pytest.mark.parametrize("method", ["claim", "complete", "replay", "set_status", "instance"])
async def test_instance_name_with_a_trailing_newline_is_invalid(
    engine: Engine, method: str
) -> None:
    ctx = await build(engine)
    await assert_refused(
        engine, ctx.uid, lambda: BY_NAME[method](engine, ctx, "t_a#0\n"), InvalidError
    )


@pytest.mark.parametrize("name", [None, 0, ["t_a#0"]], ids=repr)
@pytest.mark.parametrize("method", ["claim", "complete", "replay", "set_metadata", "instance"])
async def test_instance_name_that_is_not_a_string_is_invalid(
    engine: Engine, method: str, name: Any
) -> None:
    ctx = await build(engine)
    await assert_refused(engine, ctx.uid, lambda: BY_NAME[method](engine, ctx, name), InvalidError)


@pytest.mark.parametrize("method", ["claim", "replay", "skip", "set_status", "instance"])
async def test_unknown_and_malformed_instance_on_both_backends(
    any_engine: Engine, method: str
) -> None:
    ctx = await build(any_engine)
    await assert_refused(
        any_engine, ctx.uid, lambda: BY_NAME[method](any_engine, ctx, "t_a#7"), NotFoundError
    )
    await assert_refused(
        any_engine, ctx.uid, lambda: BY_NAME[method](any_engine, ctx, "t#x"), InvalidError
    )


async def test_ack_of_an_unknown_instance_changes_nothing(engine: Engine) -> None:
    ctx = await build(engine)
    before = await raw_state(engine, ctx.uid)
    assert await engine.ack_dispatched(ctx.uid, ["t_a#99", "nope#0", "t_f#0"]) == 0
    assert await raw_state(engine, ctx.uid) == before


# ---------------------------------------------------------------------------------------------
# Invalid transitions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NOT_FAILED)
async def test_replay_of_an_instance_that_is_not_failed_conflicts(
    engine: Engine, name: str
) -> None:
    ctx = await build(engine)
    await assert_refused(engine, ctx.uid, lambda: engine.replay(ctx.uid, name), ConflictError)
    await assert_refused(
        engine, ctx.uid, lambda: engine.replay(ctx.uid, name, {"go": {"x": 1}}), ConflictError
    )


@pytest.mark.parametrize("name", NOT_FAILED)
async def test_skip_of_an_instance_that_is_not_failed_conflicts(engine: Engine, name: str) -> None:
    ctx = await build(engine)
    await assert_refused(engine, ctx.uid, lambda: engine.skip(ctx.uid, name), ConflictError)
    await assert_refused(
        engine,
        ctx.uid,
        lambda: engine.skip(ctx.uid, name, cascade=True, result={"r": 1}),
        ConflictError,
    )


async def test_second_replay_and_second_skip_conflict(any_engine: Engine) -> None:
    """N11: a second replay of the same parent is refused; a skipped instance stays skipped."""
    engine = any_engine
    ctx = await build(engine)
    await engine.replay(ctx.uid, "t_f#0")
    await assert_refused(engine, ctx.uid, lambda: engine.replay(ctx.uid, "t_f#0"), ConflictError)
    await assert_refused(engine, ctx.uid, lambda: engine.skip(ctx.uid, "t_f#0"), ConflictError)
    await assert_refused(engine, ctx.uid, lambda: engine.skip(ctx.uid, "t_k#0"), ConflictError)
    await assert_refused(engine, ctx.uid, lambda: engine.replay(ctx.uid, "t_k#0"), ConflictError)


WORKER_CALLS: dict[str, Callable[[Engine, str, str, str], Awaitable[Any]]] = {
    "complete": lambda e, uid, n, t: e.complete(uid, n, t, {"r": 2}),
    "fail": lambda e, uid, n, t: e.fail(uid, n, t, "builtins.RuntimeError", "late"),
    "retry": lambda e, uid, n, t: e.retry(uid, n, t, cooldown=0),
    "retry_kwargs": lambda e, uid, n, t: e.retry(uid, n, t, kwargs={"go": {}}, metadata={"m": 1}),
    "renew_lease": lambda e, uid, n, t: e.renew_lease(uid, n, t),
    "set_status": lambda e, uid, n, t: e.set_status(uid, n, "skipped", cascade=True, token=t),
}


TOKEN_KINDS = ["wrong", "empty", "stale", "old"]
WRONG_TOKEN_CASES = [
    (method, kind)
    for method in WORKER_CALLS
    for kind in TOKEN_KINDS
    # set_status without a token is the operator's call (H3), not a worker's: not a refusal.
    if not (method == "set_status" and kind == "empty")
]


@pytest.mark.parametrize(("method", "kind"), WRONG_TOKEN_CASES)
async def test_worker_transition_with_a_wrong_token_conflicts(
    engine: Engine, method: str, kind: str
) -> None:
    """t_a#0 is running; only its live token may move it. ``stale`` is a token that once held
    a lease (on t_d#0), ``old`` the one of t_f#0."""
    ctx = await build(engine)
    token = {"wrong": "0" * 32, "empty": "", "stale": ctx.stale, "old": ctx.failed_token}[kind]
    await assert_refused(
        engine,
        ctx.uid,
        lambda: WORKER_CALLS[method](engine, ctx.uid, "t_a#0", token),
        ConflictError,
    )


@pytest.mark.parametrize("name", NOT_RUNNING)
@pytest.mark.parametrize("method", list(WORKER_CALLS))
async def test_worker_transition_on_an_instance_that_is_not_running_conflicts(
    engine: Engine, method: str, name: str
) -> None:
    """Even with a token the instance once held (t_d#0's, t_f#0's) or the live one of another
    instance (t_a#0's)."""
    ctx = await build(engine)
    own = {"t_d#0": ctx.stale, "t_f#0": ctx.failed_token}.get(name)
    for token in {ctx.token, own or ctx.token}:
        await assert_refused(
            engine,
            ctx.uid,
            lambda token=token: WORKER_CALLS[method](engine, ctx.uid, name, token),
            ConflictError,
        )


@pytest.mark.parametrize("method", ["complete", "fail", "retry", "renew_lease"])
async def test_worker_transition_conflicts_on_both_backends(
    any_engine: Engine, method: str
) -> None:
    ctx = await build(any_engine)
    await assert_refused(
        any_engine,
        ctx.uid,
        lambda: WORKER_CALLS[method](any_engine, ctx.uid, "t_a#0", ctx.stale),
        ConflictError,
    )
    await assert_refused(
        any_engine,
        ctx.uid,
        lambda: WORKER_CALLS[method](any_engine, ctx.uid, "t_d#0", ctx.stale),
        ConflictError,
    )


# ---------------------------------------------------------------------------------------------
# Malformed configuration
# ---------------------------------------------------------------------------------------------


def _task(**fields: Any) -> dict[str, Any]:
    return {"tasks": {"t_new": {"after": ["go"], "run": "P", **fields}}}


LONG = "n" * 201
BAD_CONFIGS: dict[str, Any] = {
    "missing run": {"tasks": {"t_new": {"after": ["go"]}}},
    "run null": _task(run=None),
    "run empty": _task(run=""),
    "run not a string": _task(run=5),
    "missing after": {"tasks": {"t_new": {"run": "P"}}},
    "empty after without andEvery": _task(after=[]),
    "empty after, andEvery empty string": _task(after=[], andEvery=""),
    "empty after, andEvery null": _task(after=[], andEvery=None),
    "after as a string": _task(after="abc"),
    "after not a list of strings": _task(after=[1]),
    "after with '#'": _task(after=["a#b"]),
    "after with a control character": _task(after=["a\x00b"]),
    "after with a newline": _task(after=["line\nbreak"]),
    "after with DEL": _task(after=["del\x7f"]),
    "after name over 200": _task(after=[LONG]),
    "after name empty": _task(after=[""]),
    "unless as a string": _task(unless="xyz"),
    "unless with '#'": _task(unless=["x#1"]),
    "unless over 200": _task(unless=[LONG]),
    "andEvery with '#'": _task(andEvery="p#1"),
    "andEvery a list": _task(andEvery=["page"]),
    "andEvery with a control character": _task(andEvery="pa\tge"),
    "andEvery over 200": _task(andEvery=LONG),
    "withParams not an object": _task(withParams=[{"a": 1}]),
    "withParams a string": _task(withParams="cfg"),
    "withParams of scalars": _task(withParams={"cfg": 1}),
    "withParams of lists": _task(withParams={"cfg": [1, 2]}),
    "withParams of strings": _task(withParams={"cfg": "x"}),
    "withParams mixed": _task(withParams={"ok": {"a": 1}, "bad": None}),
    "task name with '#'": {"tasks": {"t#1": {"after": ["go"], "run": "P"}}},
    "task name with a control character": {"tasks": {"t\x01": {"after": ["go"], "run": "P"}}},
    "task name over 200": {"tasks": {LONG: {"after": ["go"], "run": "P"}}},
    "task name empty": {"tasks": {"": {"after": ["go"], "run": "P"}}},
    "custom directive 'name'": _task(name="t_new"),
    "negative maxRetries": _task(maxRetries=-1),
    "maxRetries not a number": _task(maxRetries="three"),
    "using empty": _task(using=""),
    "task not an object": {"tasks": {"t_new": ["go"]}},
    "tasks not an object": {"tasks": [{"after": ["go"], "run": "P"}]},
    "tasks missing": {"webhooks": []},
    "config not an object": ["t_new"],
    "config a string": "tasks",
    "config null": None,
    "webhook without url": {**_task(), "webhooks": [{"events": ["sessionFinalized"]}]},
    "webhook event with '#'": {**_task(), "webhooks": [{"url": "https://x", "events": ["a#"]}]},
    "webhooks not a list": {**_task(), "webhooks": {"url": "https://x"}},
    "andEvery self ring": {"tasks": {"t_a": {"after": [], "andEvery": "t_a", "run": "P"}}},
    "andEvery ring of two": {
        "tasks": {
            "t_x": {"after": [], "andEvery": "t_y", "run": "P"},
            "t_y": {"after": [], "andEvery": "t_x", "run": "P"},
        }
    },
    "andEvery ring of three": {
        "tasks": {
            "t_x": {"after": ["go"], "andEvery": "t_y", "run": "P"},
            "t_y": {"after": ["go"], "andEvery": "t_z", "run": "P"},
            "t_z": {"after": ["go"], "andEvery": "t_x", "run": "P"},
        }
    },
    "a good task and a bad one": {
        "tasks": {"t_good": {"after": ["go"], "run": "P"}, "t_bad": {"after": ["go"]}}
    },
}


@pytest.mark.parametrize("replace", [False, True], ids=["merge", "replace"])
@pytest.mark.parametrize("config", list(BAD_CONFIGS))
async def test_malformed_config_is_invalid(engine: Engine, config: str, replace: bool) -> None:
    ctx = await build(engine)
    await assert_refused(
        engine,
        ctx.uid,
        lambda: engine.configure(ctx.uid, BAD_CONFIGS[config], replace=replace),
        InvalidError,
    )
    assert (await engine.get_config(ctx.uid)).tasks.keys() == CONFIG["tasks"].keys()


@pytest.mark.parametrize("config", list(BAD_CONFIGS))
async def test_malformed_config_does_not_create_the_session(engine: Engine, config: str) -> None:
    await assert_refused_no_session(
        engine, "fresh:1", lambda: engine.configure("fresh:1", BAD_CONFIGS[config]), InvalidError
    )


async def test_malformed_config_error_names_the_field(engine: Engine) -> None:
    ctx = await build(engine)
    error = await assert_refused(
        engine,
        ctx.uid,
        lambda: engine.configure(ctx.uid, _task(withParams={"cfg": 1})),
        InvalidError,
    )
    assert "withParams" in error.message
    error = await assert_refused(
        engine, ctx.uid, lambda: engine.configure(ctx.uid, BAD_CONFIGS["missing run"]), InvalidError
    )
    assert "run" in error.message


@pytest.mark.parametrize("replace", [False, True], ids=["merge", "replace"])
async def test_and_every_ring_across_merges_is_invalid(any_engine: Engine, replace: bool) -> None:
    """t_a andEvery t_b is configured first; t_b andEvery t_a arriving later closes the ring
    in merge mode (refused). In replace mode the first task is dropped, so there is no ring."""
    engine = any_engine
    ctx = await build(engine)
    await engine.configure(
        ctx.uid, {"tasks": {"t_p": {"after": [], "andEvery": "t_q", "run": "P"}}}
    )
    closing = {"tasks": {"t_q": {"after": [], "andEvery": "t_p", "run": "P"}}}
    if replace:
        config = await engine.configure(ctx.uid, closing, replace=True)
        assert list(config.tasks) == ["t_q"]
        return
    error = await assert_refused(
        engine, ctx.uid, lambda: engine.configure(ctx.uid, closing), InvalidError
    )
    assert "andEvery" in error.message
    # A ring of three closed by the last link, and one closed by redefining an existing task.
    await engine.configure(
        ctx.uid, {"tasks": {"t_q": {"after": [], "andEvery": "t_r", "run": "P"}}}
    )
    await assert_refused(
        engine,
        ctx.uid,
        lambda: engine.configure(
            ctx.uid, {"tasks": {"t_r": {"after": [], "andEvery": "t_p", "run": "P"}}}
        ),
        InvalidError,
    )
    await assert_refused(
        engine,
        ctx.uid,
        lambda: engine.configure(
            ctx.uid, {"tasks": {"t_p": {"after": [], "andEvery": "t_p", "run": "P"}}}
        ),
        InvalidError,
    )


async def test_malformed_config_on_both_backends(any_engine: Engine) -> None:
    """A ring caught by the script, and a bad withParams caught before it, in merge and replace."""
    ctx = await build(any_engine)
    await assert_refused(
        any_engine,
        ctx.uid,
        lambda: any_engine.configure(ctx.uid, BAD_CONFIGS["andEvery self ring"]),
        InvalidError,
    )
    await assert_refused(
        any_engine,
        ctx.uid,
        lambda: any_engine.configure(ctx.uid, BAD_CONFIGS["andEvery ring of two"], replace=True),
        InvalidError,
    )
    await assert_refused(
        any_engine,
        ctx.uid,
        lambda: any_engine.configure(ctx.uid, BAD_CONFIGS["withParams of scalars"], replace=True),
        InvalidError,
    )


async def test_config_with_a_value_that_is_not_json_is_invalid(engine: Engine) -> None:
    """A custom directive is kept as given (B8), so it must be JSON: anything else is bad input,
    not a serialization crash."""
    ctx = await build(engine)
    await assert_refused(
        engine,
        ctx.uid,
        lambda: engine.configure(ctx.uid, _task(custom=object())),
        InvalidError,
    )


async def test_valid_edge_config_is_accepted(engine: Engine) -> None:
    """Control: the limits of the bad cases above are accepted."""
    name = "n" * 200
    config = await engine.configure(
        "fresh:2",
        {
            "tasks": {
                name: {"after": [], "andEvery": "page", "run": "P", "withParams": {"a": {}}},
                "t_chain": {"after": [name], "andEvery": "t_other", "run": "P"},
                "t_other": {"after": ["go"], "run": "P", "custom": {"x": [1]}},
            }
        },
    )
    assert config.tasks[name].after == ["page"]
    assert config.tasks["t_other"].model_extra == {"custom": {"x": [1]}}


# ---------------------------------------------------------------------------------------------
# Payloads that are not objects, bad trigger names, unknown statuses, reserved metadata
# ---------------------------------------------------------------------------------------------

NOT_OBJECTS = [[1], [], "x", 5, 1.5, True]


@pytest.mark.parametrize("value", NOT_OBJECTS, ids=repr)
@pytest.mark.parametrize(
    "call",
    [
        "fire",
        "replay",
        "retry",
        "complete",
        "fail",
        "skip",
        "set_status_cascade",
        "set_status_metadata",
        "set_metadata",
        "retry_metadata",
    ],
)
async def test_payload_that_is_not_an_object_is_invalid(
    engine: Engine, call: str, value: Any
) -> None:
    ctx = await build(engine)
    uid = ctx.uid
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "fire": lambda: engine.fire(uid, "go", value),
        "replay": lambda: engine.replay(uid, "t_f#0", value),
        "retry": lambda: engine.retry(uid, "t_a#0", ctx.token, kwargs=value),
        "complete": lambda: engine.complete(uid, "t_a#0", ctx.token, value),
        "fail": lambda: engine.fail(uid, "t_a#0", ctx.token, "T", "i", value),
        "skip": lambda: engine.skip(uid, "t_f#0", cascade=True, result=value),
        "set_status_cascade": lambda: engine.set_status(
            uid, "t_f#0", "finished", cascade=True, cascade_kwargs=value
        ),
        "set_status_metadata": lambda: engine.set_status(uid, "t_f#0", "finished", metadata=value),
        "set_metadata": lambda: engine.set_metadata(uid, "t_f#0", value),
        "retry_metadata": lambda: engine.retry(uid, "t_a#0", ctx.token, metadata=value),
    }
    await assert_refused(engine, uid, calls[call], InvalidError)


@pytest.mark.parametrize(
    "kwargs",
    [{"go": 1}, {"go": [1]}, {"go": "x"}, {"a#b": {}}, {"": {}}, {LONG: {}}, {"c\x00": {}}],
    ids=["scalar", "list", "string", "hash", "empty", "long", "control"],
)
@pytest.mark.parametrize("call", ["replay", "retry"])
async def test_replacement_kwargs_must_map_triggers_to_objects(
    engine: Engine, call: str, kwargs: dict[str, Any]
) -> None:
    ctx = await build(engine)

    def run() -> Awaitable[Any]:
        if call == "replay":
            return engine.replay(ctx.uid, "t_f#0", kwargs)
        return engine.retry(ctx.uid, "t_a#0", ctx.token, kwargs=kwargs)

    await assert_refused(engine, ctx.uid, run, InvalidError)


@pytest.mark.parametrize("call", ["replay", "retry"])
async def test_null_kwargs_of_a_trigger_never_reach_the_task(engine: Engine, call: str) -> None:
    """A5: the kwargs of one trigger are always an object. A null in a replacement map is
    either refused (state unchanged) or read as {} like a fire's null kwargs (D1); it is never
    stored, nor handed to the task, as null."""
    ctx = await build(engine)
    before = await engine.snapshot(ctx.uid)
    try:
        if call == "replay":
            outcome = await engine.replay(ctx.uid, "t_f#0", {"go": None})
        else:
            outcome = await engine.retry(ctx.uid, "t_a#0", ctx.token, kwargs={"go": None})
    except InvalidError:
        assert await engine.snapshot(ctx.uid) == before
        return
    assert outcome.clone is not None
    clone = await engine.instance(ctx.uid, outcome.clone)
    assert clone.kwargs == {"go": {}}
    claim = await engine.claim(ctx.uid, outcome.clone)
    assert claim.kwargs is not None and isinstance(claim.kwargs["go"], dict)


@pytest.mark.parametrize(
    "value",
    [{"a": object()}, {"a": {1, 2}}, {1: "int key"}, {"big": 2**70}],
    ids=["object", "set", "int-key", "bigint"],
)
@pytest.mark.parametrize("call", ["fire", "complete", "skip", "set_metadata"])
async def test_payload_that_is_not_json_is_invalid(engine: Engine, call: str, value: Any) -> None:
    ctx = await build(engine)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "fire": lambda: engine.fire(ctx.uid, "go", value),
        "complete": lambda: engine.complete(ctx.uid, "t_a#0", ctx.token, value),
        "skip": lambda: engine.skip(ctx.uid, "t_f#0", result=value),
        "set_metadata": lambda: engine.set_metadata(ctx.uid, "t_f#0", value),
    }
    await assert_refused(engine, ctx.uid, calls[call], InvalidError)


@pytest.mark.parametrize(
    "trigger", ["", "a#b", "#", LONG, "x\x00", "x\ny", "\x7f", None, 5], ids=repr
)
async def test_fire_of_a_malformed_trigger_is_invalid(engine: Engine, trigger: Any) -> None:
    ctx = await build(engine)
    await assert_refused(engine, ctx.uid, lambda: engine.fire(ctx.uid, trigger), InvalidError)
    await assert_refused_no_session(
        engine, "fresh:3", lambda: engine.fire("fresh:3", trigger), InvalidError
    )


async def test_fire_with_non_object_kwargs_does_not_create_the_session(any_engine: Engine) -> None:
    await assert_refused_no_session(
        any_engine, "fresh:4", lambda: any_engine.fire("fresh:4", "go", [1]), InvalidError
    )
    await assert_refused_no_session(
        any_engine, "fresh:4", lambda: any_engine.fire("fresh:4", "a#b"), InvalidError
    )


BAD_STATUSES = ["bogus", "", "Finished", "FAILED", " running", "done", "claimed"]


@pytest.mark.parametrize("status", BAD_STATUSES, ids=repr)
async def test_unknown_status_is_invalid(engine: Engine, status: str) -> None:
    ctx = await build(engine)
    for name in ("t_f#0", "t_s#0", "t_u#0"):
        await assert_refused(
            engine,
            ctx.uid,
            lambda name=name: engine.set_status(ctx.uid, name, status, cascade=True),
            InvalidError,
        )
    await assert_refused(
        engine,
        ctx.uid,
        lambda: engine.set_status(ctx.uid, "t_a#0", status, token=ctx.token),
        InvalidError,
    )
    await assert_refused(
        engine, ctx.uid, lambda: engine.instances(ctx.uid, status=status), InvalidError
    )
    await assert_refused(
        engine,
        ctx.uid,
        lambda: engine.instances(ctx.uid, status=status, task="t_f"),
        InvalidError,
    )


@pytest.mark.parametrize("task", ["", "t#x", LONG, "t\x00", 5], ids=repr)
async def test_instances_with_a_malformed_task_filter_is_invalid(engine: Engine, task: Any) -> None:
    ctx = await build(engine)
    await assert_refused(
        engine, ctx.uid, lambda: engine.instances(ctx.uid, task=task), InvalidError
    )


async def test_unknown_status_on_both_backends(any_engine: Engine) -> None:
    ctx = await build(any_engine)
    await assert_refused(
        any_engine, ctx.uid, lambda: any_engine.set_status(ctx.uid, "t_f#0", "bogus"), InvalidError
    )
    await assert_refused(
        any_engine, ctx.uid, lambda: any_engine.instances(ctx.uid, status="bogus"), InvalidError
    )


RESERVED = [{"timestamps": {}}, {"timestamps": None}, {"note": 1, "timestamps": {"x": 1}}]


@pytest.mark.parametrize("metadata", RESERVED, ids=["empty", "null", "with-other-keys"])
@pytest.mark.parametrize("call", ["set_metadata", "set_status", "set_status_token", "retry"])
async def test_reserved_metadata_key_is_invalid(
    engine: Engine, call: str, metadata: dict[str, Any]
) -> None:
    ctx = await build(engine)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "set_metadata": lambda: engine.set_metadata(ctx.uid, "t_f#0", metadata),
        "set_status": lambda: engine.set_status(ctx.uid, "t_f#0", "finished", metadata=metadata),
        "set_status_token": lambda: engine.set_status(
            ctx.uid, "t_a#0", "skipped", metadata=metadata, token=ctx.token
        ),
        "retry": lambda: engine.retry(ctx.uid, "t_a#0", ctx.token, metadata=metadata),
    }
    error = await assert_refused(engine, ctx.uid, calls[call], InvalidError)
    assert "timestamps" in error.message


async def test_reserved_metadata_key_on_both_backends(any_engine: Engine) -> None:
    ctx = await build(any_engine)
    await assert_refused(
        any_engine,
        ctx.uid,
        lambda: any_engine.set_metadata(ctx.uid, "t_d#0", {"timestamps": {}}),
        InvalidError,
    )


@pytest.mark.parametrize(
    "cooldown", [-1, -0.001, -(10**9), math.inf, -math.inf, math.nan, 10**9, "5", None], ids=repr
)
async def test_bad_cooldown_is_invalid(engine: Engine, cooldown: Any) -> None:
    ctx = await build(engine)
    await assert_refused(
        engine,
        ctx.uid,
        lambda: engine.retry(ctx.uid, "t_a#0", ctx.token, cooldown=cooldown),
        InvalidError,
    )


async def test_negative_cooldown_on_both_backends(any_engine: Engine) -> None:
    ctx = await build(any_engine)
    await assert_refused(
        any_engine,
        ctx.uid,
        lambda: any_engine.retry(ctx.uid, "t_a#0", ctx.token, cooldown=-1),
        InvalidError,
    )


BAD_LEASES = [-1, -30_000, "soon"]


@pytest.mark.parametrize("lease_ms", BAD_LEASES, ids=repr)
async def test_claim_with_a_bad_lease_length_is_invalid(engine: Engine, lease_ms: Any) -> None:
    """A lease that is over before it starts (or is not a number) is bad input: the claim must
    not take the instance to running under a dead lease."""
    ctx = await build(engine)
    await assert_refused(
        engine, ctx.uid, lambda: engine.claim(ctx.uid, "t_s#0", lease_ms=lease_ms), InvalidError
    )


@pytest.mark.parametrize("lease_ms", BAD_LEASES, ids=repr)
async def test_renew_with_a_bad_lease_length_is_invalid(engine: Engine, lease_ms: Any) -> None:
    ctx = await build(engine)
    await assert_refused(
        engine,
        ctx.uid,
        lambda: engine.renew_lease(ctx.uid, "t_a#0", ctx.token, lease_ms=lease_ms),
        InvalidError,
    )


@pytest.mark.parametrize("method", ["complete", "fail", "retry", "renew_lease"])
async def test_missing_token_is_refused(engine: Engine, method: str) -> None:
    """A worker that passes on the token of a claim that was not granted (``busy`` answers carry
    none) gets a typed refusal, not a Redis client error."""
    ctx = await build(engine)
    await assert_refused(
        engine,
        ctx.uid,
        lambda: WORKER_CALLS[method](engine, ctx.uid, "t_a#0", None),  # type: ignore[arg-type]
        (ConflictError, InvalidError),
    )


@pytest.mark.parametrize("call", ["complete", "fail", "retry"])
async def test_bad_log_level_is_invalid(engine: Engine, call: str) -> None:
    ctx = await build(engine)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "complete": lambda: engine.complete(ctx.uid, "t_a#0", ctx.token, {}, log_level="loud"),
        "fail": lambda: engine.fail(ctx.uid, "t_a#0", ctx.token, "T", "i", log_level="loud"),
        "retry": lambda: engine.retry(ctx.uid, "t_a#0", ctx.token, log_level="loud"),  # type: ignore[arg-type]
    }
    await assert_refused(engine, ctx.uid, calls[call], InvalidError)


async def test_ack_dispatched_of_a_bare_string_is_invalid(engine: Engine) -> None:
    """A bare string is not a list of names (it would be read character by character)."""
    ctx = await build(engine)
    await assert_refused(
        engine, ctx.uid, lambda: engine.ack_dispatched(ctx.uid, "t_s#0"), InvalidError
    )


# ---------------------------------------------------------------------------------------------
# Controls: the same calls with good input are accepted and do change the session
# ---------------------------------------------------------------------------------------------


async def test_controls_good_input_is_accepted(engine: Engine) -> None:
    ctx = await build(engine)
    uid = ctx.uid
    version = (await engine.snapshot(uid)).version

    await engine.renew_lease(uid, "t_a#0", ctx.token)
    await engine.complete(uid, "t_a#0", ctx.token, {"ok": True})
    await engine.skip(uid, "t_f#0")
    await engine.set_status(uid, "t_u#0", "skipped", metadata={"why": "operator"})
    await engine.fire(uid, "page")
    await engine.ack_dispatched(uid, ["t_e#0"])

    snapshot = await engine.snapshot(uid)
    assert snapshot.version > version
    assert snapshot.instances["t_a#0"].status == "finished"
    assert snapshot.instances["t_f#0"].status == "skipped"
    assert snapshot.instances["t_u#0"].status == "skipped"
    assert snapshot.instances["t_e#0"].status == "scheduled"


@pytest.mark.parametrize("name", ["t_f#0", "t_a#0", "t_u#0"])
async def test_controls_set_metadata_and_mark_logs_resolved_are_accepted(
    engine: Engine, name: str
) -> None:
    """H4/H5 with good input: merged, status kept, lastModified moved, one version step."""
    ctx = await build(engine)
    before = await engine.snapshot(ctx.uid)
    status = before.instances[name].status

    record = await engine.set_metadata(ctx.uid, name, {"note": "checked"})
    assert record.metadata["note"] == "checked" and record.status == status
    assert "lastModified" in record.metadata["timestamps"]
    record = await engine.mark_logs_resolved(ctx.uid, name)
    assert record.metadata["logsResolved"] is True and record.metadata["note"] == "checked"

    after = await engine.snapshot(ctx.uid)
    assert after.version == before.version + 2
    assert after.instances[name] == record
