"""The runtime-manager example's HTTP tasks in Python."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
from tasks_server import serve


def compare(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    kwargs = payload["kwargs"]
    return 200, {"same": kwargs["flora_page3"] == kwargs["fauna_page6"]}


def report(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, {"report": f"{payload['session']} complete", "by": "python"}


if __name__ == "__main__":
    serve(int(sys.argv[1]), {"/compare": compare, "/report": report})
