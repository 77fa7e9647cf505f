"""Error titles fit the error: unknown routes, a missing Content-Type, deeply nested JSON."""

from __future__ import annotations

import httpx

from tests.conftest import unique_prefix


async def test_an_unknown_route_is_a_generic_404_not_a_missing_session(
    api: httpx.AsyncClient,
) -> None:
    for path in ("/nothing-here", f"/sessions/{unique_prefix()}/no-such-thing"):
        answer = await api.get(path)
        assert answer.status_code == 404
        problem = answer.json()
        assert problem["title"] == "Not Found", problem
        assert problem["type"] == "/problems/route-not-found"
        assert "session" not in problem["title"].lower()


async def test_a_missing_session_is_still_named(api: httpx.AsyncClient) -> None:
    problem = (await api.get(f"/sessions/{unique_prefix()}")).json()
    assert problem["type"] == "/problems/not-found"
    assert problem["title"] == "No such session or instance"


async def test_a_body_without_content_type_is_told_which_header(api: httpx.AsyncClient) -> None:
    uid = unique_prefix()
    answer = await api.post(f"/sessions/{uid}/fire", content=b'{"trigger": "go"}')
    assert answer.status_code == 415, answer.text
    problem = answer.json()
    assert problem["type"] == "/problems/unsupported-media-type"
    assert problem["errors"][0]["field"] == "header.Content-Type"
    assert "dictionary" not in answer.text
    assert (await api.get(f"/sessions/{uid}")).status_code == 404  # nothing stored


async def test_a_wrong_content_type_is_told_which_header(api: httpx.AsyncClient) -> None:
    answer = await api.post(
        f"/sessions/{unique_prefix()}/fire",
        content=b'{"trigger": "go"}',
        headers={"Content-Type": "text/plain"},
    )
    assert answer.status_code == 415, answer.text
    assert answer.json()["errors"][0]["field"] == "header.Content-Type"


async def test_json_nested_too_deep_is_not_called_invalid(api: httpx.AsyncClient) -> None:
    depth = 1000
    body = '{"trigger": "go", "kwargs": {"x": ' + "[" * depth + "]" * depth + "}}"
    answer = await api.post(
        f"/sessions/{unique_prefix()}/fire",
        content=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code in (200, 400, 422), answer.text
    if answer.status_code != 200:
        problem = answer.json()
        assert "not valid JSON" not in problem["title"], problem
        # Refused where the parser gives up (400) or where the stored copy is encoded (422).
        assert "nest" in answer.text.lower() or "recursion limit" in answer.text.lower(), problem
