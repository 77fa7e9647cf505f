"""How a task run ended, independent of how the task was written (HTTP or Python)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["finished", "failed", "retry", "skip"]


@dataclass
class TaskOutcome:
    kind: Kind
    result: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    cooldown: float = 0.0
    kwargs: dict[str, Any] | None = None
    exception_type: str = ""
    exception_info: str = ""
    exception_context: dict[str, Any] = field(default_factory=dict)
    log_level: int = 0

    @classmethod
    def failure(
        cls, exception_type: str, info: str, context: dict[str, Any] | None = None, level: int = 0
    ) -> TaskOutcome:
        return cls("failed", exception_type=exception_type, exception_info=info,
                   exception_context=context or {}, log_level=level)  # fmt: skip
