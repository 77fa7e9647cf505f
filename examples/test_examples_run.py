"""Each example runs as its README says (``python examples/<name>/run.py --tasks python|node``)
against a real service, and prints what its README promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from triggers_client.testing import EmbeddedService

EXAMPLES = Path(__file__).resolve().parent
LANGUAGES = ["python", "node"]


def run_example(name: str, language: str, service: EmbeddedService) -> str:
    env = {
        **os.environ,
        "TRIGGERS_URL": service.url,
        "TRIGGERS_WEBHOOK_SECRET": service.webhook_secret,
    }
    env.pop("TRIGGERS_API_KEY", None)
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name / "run.py"), "--tasks", language],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def default_manager_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedService]:
    env = {"TRIGGERS_MANAGER": "default"}
    with EmbeddedService(tmp_path_factory.mktemp("default-manager"), env) as service:
        yield service


@pytest.mark.parametrize("language", LANGUAGES)
def test_questionnaire(language: str, triggers_service: EmbeddedService) -> None:
    out = run_example("questionnaire", language, triggers_service)
    assert re.search(r"-1: t_compare waits for fauna_page6", out)
    finished = rf"-1: t_compare#0 finished .*'differences': \['q2'\], 'by': '{language}'"
    assert re.search(finished, out)
    assert re.search(r"-2: t_compare#0 abandoned", out)
    assert len(re.findall(r"webhook sessionFinalized applicant-\w+-[12] \(signature verified\)",
                          out)) == 2  # fmt: skip


@pytest.mark.parametrize("language", LANGUAGES)
def test_super_session(language: str, triggers_service: EmbeddedService) -> None:
    out = run_example("super_session", language, triggers_service)
    assert re.search(r"webhook sessionFinalized applicant:\w+: t_compare \{'same': True", out)
    assert re.search(rf"case:\w+: t_decide#0 \{{'decision': 'accept', 'by': '{language}'\}}", out)
    assert re.search(r"webhook sessionFinalized case:\w+", out)


@pytest.mark.parametrize("language", LANGUAGES)
def test_runtime_manager_finalizing(language: str, triggers_service: EmbeddedService) -> None:
    out = run_example("runtime_manager", language, triggers_service)
    assert re.search(rf"finalized; t_report#0 finished .*'by': '{language}'", out)
    assert re.search(r"webhook sessionFinalized applicant-\w+", out)


def test_runtime_manager_default(default_manager_service: EmbeddedService) -> None:
    out = run_example("runtime_manager", "python", default_manager_service)
    assert "t_compare#0 finished" in out
    assert "not finalized (this manager does not finalize); waiting: {'t_report': " in out
