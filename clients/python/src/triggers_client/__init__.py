"""Python client of the Triggers service.

from triggers_client import Client
with Client() as triggers:                       # TRIGGERS_URL, TRIGGERS_API_KEY
    triggers.configure("applicant:123", {"tasks": {"t_compare": {
        "after": ["flora_page3", "fauna_page6"], "unless": ["withdrawn"],
        "run": "https://tasks.example.com/compare"}}})
    triggers.fire("applicant:123", "flora_page3", {"responses": {"q1": "yes"}})
"""

from triggers_client._core import NO_RETRIES, RetryPolicy
from triggers_client.async_client import AsyncClient
from triggers_client.calls import UNSET
from triggers_client.client import Client
from triggers_client.errors import (
    PROBLEM_CLASSES,
    Conflict,
    FieldError,
    Forbidden,
    IdempotencyInFlight,
    IdempotencyKeyReused,
    InternalError,
    InvalidWebhook,
    JsonTooDeep,
    LimitExceeded,
    MalformedJson,
    MethodNotAllowed,
    NotFound,
    OutcomeUnknown,
    PayloadTooLarge,
    ProblemError,
    RequestTimeout,
    RouteNotFound,
    TriggersConnectionError,
    TriggersError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
    WaitTimeout,
)
from triggers_client.models import (
    Attempt,
    Config,
    Delivery,
    Event,
    FireResult,
    Instance,
    ReplayResult,
    Session,
    Subscription,
    TaskConfig,
    UnresolvedInstance,
    UnresolvedTask,
    WebhookEvent,
)
from triggers_client.webhooks import verify_signature, verify_webhook

__all__ = [
    "NO_RETRIES",
    "PROBLEM_CLASSES",
    "UNSET",
    "AsyncClient",
    "Attempt",
    "Client",
    "Config",
    "Conflict",
    "Delivery",
    "Event",
    "FieldError",
    "FireResult",
    "Forbidden",
    "IdempotencyInFlight",
    "IdempotencyKeyReused",
    "Instance",
    "InternalError",
    "InvalidWebhook",
    "JsonTooDeep",
    "LimitExceeded",
    "MalformedJson",
    "MethodNotAllowed",
    "NotFound",
    "OutcomeUnknown",
    "PayloadTooLarge",
    "ProblemError",
    "ReplayResult",
    "RequestTimeout",
    "RetryPolicy",
    "RouteNotFound",
    "Session",
    "Subscription",
    "TaskConfig",
    "TriggersConnectionError",
    "TriggersError",
    "Unauthorized",
    "Unavailable",
    "UnresolvedInstance",
    "UnresolvedTask",
    "UnsupportedMediaType",
    "ValidationFailed",
    "WaitTimeout",
    "WebhookEvent",
    "verify_signature",
    "verify_webhook",
]
