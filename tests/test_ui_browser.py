"""The inspector page in a real browser: Playwright for Python driving Debian's chromium against
a real `triggers serve` (embedded Redis, auth on, two keys: an operator and a read-only one).

Screenshots of every page land in ``SCREENSHOTS`` (printed at the end of the test run by
tests/conftest.py, so CI's log says where they are).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from service.redis_server import free_port
from tests.conftest import SCREENSHOTS, LiveServer, api_settings
from tests.test_serve import start_serve, stop

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OPS, READER = "ops-" + uuid.uuid4().hex, "ro-" + uuid.uuid4().hex
CONFIG = {
    "tasks": {
        "t_compare": {"after": ["flora_page3", "fauna_page6"], "run": "x", "using": "external"},
        "t_report": {"after": ["t_compare"], "run": "x", "using": "external"},
        "t_reminder": {"after": [], "andEvery": "tick", "unless": ["withdrawn"], "run": "x",
                       "using": "external"},
    }
}  # fmt: skip

pytestmark = pytest.mark.timeout(300)


def key_entry(name: str, secret: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "sha256": hashlib.sha256(secret.encode()).hexdigest(), **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    keys = [key_entry("ops", OPS), key_entry("reader", READER, scopes=["read"])]
    port = free_port()
    process = start_serve(
        tmp_path_factory.mktemp("ui"), port, TRIGGERS_AUTH="on", TRIGGERS_API_KEYS=json.dumps(keys)
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process, signal.SIGTERM)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "chromium is missing: apt-get install -y chromium"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield found
        found.close()


@pytest.fixture
def ops_api(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {OPS}"}) as client:
        yield client


class Console:
    """Every console error and uncaught page error of a page (a test ends with none)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("response", self._response)

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.errors.append(f"{response.status} {response.url}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


def logged_in(
    browser: Browser, server: str, secret: str, width: int = 1280, dark: bool = False
) -> tuple[Page, Console]:
    scheme = "dark" if dark else "light"
    page = browser.new_page(viewport={"width": width, "height": 800}, color_scheme=scheme)
    console = Console(page)
    page.goto(f"{server}/ui/")
    page.fill("#login-key", secret)
    page.click("#login-form button")
    expect(page.locator("#list")).to_be_visible()
    return page, console


def new_session(api: httpx.Client) -> str:
    uid = f"applicant:{uuid.uuid4().hex[:8]}"
    assert api.put(f"/sessions/{uid}/config", json=CONFIG).status_code == 200
    assert api.post(f"/sessions/{uid}/fire", json={"trigger": "flora_page3"}).status_code == 200
    return uid


def fail(api: httpx.Client, uid: str, name: str) -> None:
    answer = api.post(f"/sessions/{uid}/instances/{name.replace('#', '%23')}/status",
                      json={"status": "failed"})  # fmt: skip
    assert answer.status_code == 200, answer.text


def test_list_and_session_page_with_live_updates(
    browser: Browser, server: str, ops_api: httpx.Client
) -> None:
    uid = new_session(ops_api)
    page, console = logged_in(browser, server, OPS)
    expect(page.locator(f'#sessions tr[data-uid="{uid}"]')).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "list.png"), full_page=True)
    page.fill("#filter-prefix", uid)
    page.select_option("#filter-status", "finalized")
    page.click("#filter button")
    expect(page.locator(f'#sessions tr[data-uid="{uid}"]')).to_have_count(0)
    page.select_option("#filter-status", "active")
    page.click("#filter button")
    expect(page.locator("#sessions tbody tr")).to_have_count(1)

    page.click(f'#sessions tr[data-uid="{uid}"] a')
    for task in CONFIG["tasks"]:
        expect(page.locator(f'#graph g[data-node="{task}"]')).to_have_count(1)
    expect(page.locator('#graph g[data-node="flora_page3"]')).to_have_count(1)
    expect(page.locator("#live")).to_have_text("live")

    started = time.monotonic()
    ops_api.post(f"/sessions/{uid}/fire", json={"trigger": "fauna_page6", "kwargs": {"n": 6}})
    expect(page.locator('#instances tr[data-instance="t_compare#0"]')).to_have_attribute(
        "data-status", "scheduled", timeout=1000
    )
    expect(page.locator('#timeline li[data-type="fired"]')).not_to_have_count(0)
    assert time.monotonic() - started < 2  # the expectation above waited at most 1 s
    page.fill("#fire-trigger", "withdrawn")
    page.fill("#fire-kwargs", '{"reason": "moved"}')
    page.click("#fire-button")
    page.click("#dialog-ok")
    fired = page.locator('#timeline li[data-type="fired"]').filter(has_text="trigger=withdrawn")
    expect(fired).to_have_count(1)
    latest = ops_api.get(f"/sessions/{uid}").json()["latestKwargs"]
    assert latest["withdrawn"] == {"reason": "moved"}
    page.screenshot(path=str(SCREENSHOTS / "session.png"), full_page=True)
    assert console.errors == []


def test_replay_and_skip_buttons(browser: Browser, server: str, ops_api: httpx.Client) -> None:
    uid = new_session(ops_api)
    ops_api.post(f"/sessions/{uid}/fire", json={"trigger": "fauna_page6"})
    ops_api.post(f"/sessions/{uid}/fire", json={"trigger": "tick"})
    fail(ops_api, uid, "t_compare#0")
    fail(ops_api, uid, "t_reminder#0")
    page, console = logged_in(browser, server, OPS)
    page.goto(f"{server}/ui/#/s/{uid}")

    page.click('#instances button.replay[data-instance="t_compare#0"]')
    page.fill("#dialog-json", '{"flora_page3": {"p": 3}, "fauna_page6": {"p": 6}}')
    page.click("#dialog-ok")
    clone = page.locator('#instances tr[data-instance="t_compare#1"]')
    expect(clone).to_have_attribute("data-status", "scheduled")
    expect(page.locator('#instances tr[data-instance="t_compare#0"]')).to_have_attribute(
        "data-status", "replayed"
    )
    kwargs = ops_api.get(f"/sessions/{uid}/instances/t_compare%231").json()["kwargs"]
    assert kwargs == {"flora_page3": {"p": 3}, "fauna_page6": {"p": 6}}

    page.click('#instances button.skip[data-instance="t_reminder#0"]')
    page.check("#dialog-check")
    page.click("#dialog-ok")
    expect(page.locator('#instances tr[data-instance="t_reminder#0"]')).to_have_attribute(
        "data-status", "skipped"
    )
    operator = page.locator('#timeline li[data-type="operator"]')
    expect(operator.filter(has_text="action=replay")).to_have_count(1)
    expect(operator.filter(has_text="action=skip+cascade")).to_have_count(1)
    page.screenshot(path=str(SCREENSHOTS / "after-actions.png"), full_page=True)
    page.click("#delete-button")
    page.click("#dialog-ok")
    expect(page.locator("#list")).to_be_visible()
    assert ops_api.get(f"/sessions/{uid}").status_code == 404
    assert console.errors == []


def test_read_only_key_sees_no_actions(
    browser: Browser, server: str, ops_api: httpx.Client
) -> None:
    uid = new_session(ops_api)
    ops_api.post(f"/sessions/{uid}/fire", json={"trigger": "fauna_page6"})
    fail(ops_api, uid, "t_compare#0")
    page, console = logged_in(browser, server, READER, width=390, dark=True)
    page.goto(f"{server}/ui/#/s/{uid}")
    expect(page.locator('#instances tr[data-instance="t_compare#0"]')).to_have_attribute(
        "data-status", "failed"
    )
    expect(page.locator("#instances button")).to_have_count(0)
    expect(page.locator("#fire-form")).to_be_hidden()
    expect(page.locator("#delete-button")).to_be_hidden()
    page.screenshot(path=str(SCREENSHOTS / "read-only-phone-dark.png"), full_page=True)
    assert console.errors == []


def test_the_page_is_served_with_a_strict_policy_or_not_at_all(redis_url: str) -> None:
    with (
        LiveServer(api_settings(redis_url)) as on,
        LiveServer(api_settings(redis_url, ui=False)) as off,
    ):
        page = httpx.get(f"{on.url}/ui/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert httpx.get(f"{on.url}/ui/app.js").status_code == 200
        assert httpx.get(f"{on.url}/ui/nothing.js").status_code == 404
        assert httpx.get(f"{off.url}/ui/").status_code == 404
