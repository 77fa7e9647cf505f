"""The committed openapi.json is the app's document (clients are generated from it), and the
document is complete: every schema has an example, every error answer names its problem types.

When the first test fails, the API changed: run ``scripts/openapi`` and commit openapi.json and
clients/typescript/src/schema.d.ts (it rewrites both).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from service.api.app import create_app
from service.api.problems import KINDS
from service.settings import Settings

COMMITTED = Path(__file__).resolve().parent.parent / "openapi.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    logging.disable(logging.WARNING)
    try:
        return create_app(Settings(auth="off", redis_url=None)).openapi()
    finally:
        logging.disable(logging.NOTSET)


def test_committed_document_is_the_apps(document: dict[str, Any]) -> None:
    committed = json.loads(COMMITTED.read_text())
    assert committed == json.loads(json.dumps(document)), (
        "openapi.json differs from the app's document: run scripts/openapi and commit it"
    )


def test_every_schema_has_examples(document: dict[str, Any]) -> None:
    missing = [
        name for name, schema in document["components"]["schemas"].items()
        if not schema.get("examples")
    ]  # fmt: skip
    assert missing == [], f"schemas without examples (see service/api/openapi.py): {missing}"


def test_every_error_answer_names_its_problem_types(document: dict[str, Any]) -> None:
    known = {f"/problems/{kind}" for kind in KINDS}
    named = document["components"]["examples"]
    for path, operations in document["paths"].items():
        if not path.startswith("/sessions/"):
            continue
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                where = f"{method.upper()} {path} {status}"
                content = response["content"]["application/problem+json"]
                examples = [
                    named[ref["$ref"].rsplit("/", 1)[1]]["value"]
                    for ref in content["examples"].values()
                ]
                types = {example["type"] for example in examples}
                assert types, where
                assert types <= known, where
                assert {example["status"] for example in examples} == {int(status)}, where
