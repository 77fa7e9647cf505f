"""The `triggers` command line as a user runs it: real subprocesses against a real server.

Errors are one line on stderr with a documented exit code (never a traceback), the URL and the
API key come from the environment, nothing is logged unless asked (-v), and the client
commands start without importing the server's stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import cli, client
from service.api.auth import SCOPES, new_api_key
from service.redis_server import free_port
from service.settings import Settings
from tests.conftest import LiveServer, api_settings, unique_prefix

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


def triggers(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def keyed_server(redis_url: str) -> Iterator[tuple[str, str]]:
    """A server with authentication on and one key: (url, secret)."""
    secret, entry = new_api_key("cli", [], list(SCOPES))
    settings = api_settings(redis_url, auth="on", api_keys=json.dumps([entry.model_dump()]))
    with LiveServer(settings) as server:
        yield server.url, secret


def test_an_unreachable_service_is_one_line_and_exit_3() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = triggers("fire", "applicant:1", "go", TRIGGERS_URL=url)
    assert result.returncode == EXIT_UNREACHABLE
    line = one_line(result)
    assert url in line and "TRIGGERS_URL" in line


def test_bad_json_and_a_missing_file_are_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    bad = triggers("fire", "applicant:1", "go", "{not json", TRIGGERS_URL=url)
    assert bad.returncode == EXIT_USAGE
    assert "not valid JSON" in one_line(bad)
    missing = tmp_path / "nothing.json"
    absent = triggers("configure", "applicant:1", f"@{missing}", TRIGGERS_URL=url)
    assert absent.returncode == EXIT_USAGE
    assert str(missing) in one_line(absent)


def test_url_and_api_key_come_from_the_environment(keyed_server: tuple[str, str]) -> None:
    url, secret = keyed_server
    uid = f"{unique_prefix()}:1"
    fired = triggers("fire", uid, "go", '{"page": 6}', TRIGGERS_URL=url, TRIGGERS_API_KEY=secret)
    assert fired.returncode == 0, fired.stderr
    assert json.loads(fired.stdout)["trigger"] == "go"
    assert fired.stderr == ""  # quiet by default: no "INFO httpx HTTP Request" lines
    shown = triggers("show", uid, TRIGGERS_URL=url, TRIGGERS_API_KEY=secret)
    assert shown.returncode == 0 and json.loads(shown.stdout)["uid"] == uid


def test_a_refusal_is_one_line_naming_the_status_and_exit_1(
    keyed_server: tuple[str, str],
) -> None:
    url, _ = keyed_server
    refused = triggers("show", f"{unique_prefix()}:1", TRIGGERS_URL=url)
    assert refused.returncode == EXIT_REFUSED
    assert "401" in one_line(refused)


def test_verbose_shows_the_http_requests(keyed_server: tuple[str, str]) -> None:
    url, secret = keyed_server
    result = triggers("-v", "show", f"{unique_prefix()}:1", TRIGGERS_URL=url,
                      TRIGGERS_API_KEY=secret)  # fmt: skip
    assert result.returncode == EXIT_REFUSED  # no such session
    assert "HTTP Request: GET" in result.stderr
    assert '"status": 404' in result.stderr  # the whole problem document


IMPORT_PROBE = """
import sys
from service import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("fastapi", "starlette", "dramatiq", "redis", "uvicorn", "pydantic_settings")
print("HEAVY=" + ",".join(m for m in heavy if m in sys.modules))
"""


@pytest.mark.parametrize(
    "args", [["--help"], ["show", "--url", "http://127.0.0.1:1", "applicant:1"]],
    ids=["help", "client"],
)  # fmt: skip
def test_help_and_client_commands_import_no_server_stack(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, *args], capture_output=True, text=True, timeout=60
    )
    assert "HEAVY=\n" in result.stdout, result.stdout + result.stderr


def test_the_light_copies_agree_with_the_server_side() -> None:
    """The command line spells out what it would otherwise import from the server's modules."""
    assert tuple(cli.SCOPES) == tuple(SCOPES)
    assert Settings().url == client.DEFAULT_URL


def test_a_bad_setting_is_one_line_naming_it_and_exit_2(tmp_path: Path) -> None:
    result = triggers("serve", "--port", str(free_port()), TRIGGERS_BODY_TIMEOUT="soon",
                      TRIGGERS_DATA_DIR=str(tmp_path))  # fmt: skip
    assert result.returncode == EXIT_USAGE
    assert "TRIGGERS_BODY_TIMEOUT" in one_line(result)
    assert not (tmp_path / "redis").exists()
