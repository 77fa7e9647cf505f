"""The engine: session state in Redis, changed only by one Lua script per state change.

`Engine` (engine.py) is the async facade; models.py holds the typed configuration and state;
lua/ holds one script per transition plus includes/lib.lua, the shared part.
"""

from service.engine.engine import Engine, Idempotency
from service.engine.errors import (
    ConflictError,
    EngineError,
    IdempotencyMismatchError,
    InvalidError,
    LimitError,
    NotFoundError,
)
from service.engine.models import (
    Claim,
    FireRecord,
    Instance,
    Outcome,
    SessionConfig,
    SessionSnapshot,
    Subscription,
    TaskConfig,
    UnresolvedInstance,
    UnresolvedTask,
)

__all__ = [
    "Claim",
    "ConflictError",
    "Engine",
    "EngineError",
    "FireRecord",
    "Idempotency",
    "IdempotencyMismatchError",
    "Instance",
    "InvalidError",
    "LimitError",
    "NotFoundError",
    "Outcome",
    "SessionConfig",
    "SessionSnapshot",
    "Subscription",
    "TaskConfig",
    "UnresolvedInstance",
    "UnresolvedTask",
]
