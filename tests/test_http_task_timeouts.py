"""Per-task timeout directives are clamped to TRIGGERS_HTTP_MAX_TIMEOUT (issue 14, item 6):
``readTimeout: 1e9`` asks for a day and gets the operator's maximum."""

from __future__ import annotations

import math

import pytest

from service.worker.http_task import _seconds


@pytest.mark.parametrize(
    ("given", "expected"),
    [(3, 3.0), (0.5, 0.5), (1e9, 300.0), (math.inf, 300.0), (300, 300.0),
     (0, 60.0), (-1, 60.0), (math.nan, 60.0), ("10", 60.0), (True, 60.0), (None, 60.0)],
)  # fmt: skip
def test_directives_are_clamped_to_the_maximum(given: object, expected: float) -> None:
    assert _seconds(given, 60.0, 300.0) == expected


def test_defaults_above_the_maximum_are_clamped_too() -> None:
    assert _seconds(None, 60.0, 10.0) == 10.0
