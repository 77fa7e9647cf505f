"""The questionnaire's HTTP task in Python: POST /compare gets both pages' answers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
from tasks_server import serve


def compare(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    flora = payload["kwargs"]["flora_page3"]["responses"]
    fauna = payload["kwargs"]["fauna_page6"]["responses"]
    differences = sorted(q for q in flora.keys() & fauna.keys() if flora[q] != fauna[q])
    return 200, {"same": not differences, "differences": differences, "by": "python"}


if __name__ == "__main__":
    serve(int(sys.argv[1]), {"/compare": compare})
