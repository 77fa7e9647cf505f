"""The README's examples work as written: they are read from README.md and run.

The webhook subscription JSON is sent to a live server; the receiver runs as its own process in
a folder of its own (it must not depend on the current directory) and gets signed deliveries;
an instance name with `#` is read at the URL the README shows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from standardwebhooks.webhooks import Webhook

from service.redis_server import free_port
from tests.conftest import unique_prefix

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def python_block_with(marker: str) -> str:
    for block in re.findall(r"```python\n(.*?)```", README, flags=re.S):
        if marker in block:
            return str(block)
    raise AssertionError(f"no python block with {marker!r} in the README")


async def test_the_readme_webhook_json_adds_a_subscription(api: httpx.AsyncClient) -> None:
    line = next(x for x in README.splitlines() if x.strip().startswith("-d '") and "webhooks" in x)
    body = json.loads(line.split("-d '", 1)[1].rsplit("'", 1)[0])
    uid = unique_prefix()
    answer = await api.patch(f"/sessions/{uid}/config", json=body)
    assert answer.status_code == 200, answer.text
    urls = [hook["url"] for hook in answer.json()["webhooks"]]
    assert urls == ["http://127.0.0.1:9000/hooks"]


async def test_the_readme_instance_url_encodes_the_hash(api: httpx.AsyncClient) -> None:
    assert "/instances/t_compare%230" in README
    uid = unique_prefix()
    config = {"tasks": {"t_compare": {"after": ["a"], "run": "x", "using": "external"}}}
    assert (await api.put(f"/sessions/{uid}/config", json=config)).status_code == 200
    assert (await api.post(f"/sessions/{uid}/fire", json={"trigger": "a"})).status_code == 200
    instance = await api.get(f"/sessions/{uid}/instances/t_compare%230")
    assert instance.status_code == 200, instance.text
    assert instance.json()["name"] == "t_compare#0"


def test_the_readme_receiver_verifies_with_the_secret_from_its_environment(
    tmp_path: Path,
) -> None:
    port = free_port()
    code = python_block_with("class Receiver").replace("9000", str(port))
    (tmp_path / "receiver.py").write_text(code)
    env = {**os.environ, "TRIGGERS_WEBHOOK_SECRET": SECRET}
    receiver = subprocess.Popen(
        [sys.executable, "receiver.py"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/hooks"
        body = json.dumps({"type": "sessionFinalized", "session": "applicant:123",
                           "timestamp": "2026-11-27T03:00:00Z", "data": {}})  # fmt: skip
        now = datetime.now(tz=UTC)
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(SECRET).sign("msg_1", now, body),
            "content-type": "application/json",
        }
        deadline = time.monotonic() + 30
        while True:
            try:
                signed = httpx.post(url, content=body, headers=headers, timeout=5)
                break
            except httpx.TransportError:
                assert receiver.poll() is None, receiver.communicate()[1]
                assert time.monotonic() < deadline, "the receiver did not start"
                time.sleep(0.1)
        assert signed.status_code == 204
        forged = dict(headers, **{"webhook-signature": "v1,AAAA"})
        assert httpx.post(url, content=body, headers=forged, timeout=5).status_code == 401
    finally:
        receiver.terminate()
        receiver.communicate(timeout=30)
