"""Configuration checks at the door: what could only fail later is refused now (422).

A configuration is stored as given and runs much later, in a worker: a ``run`` that is neither
an http(s) URL nor a Python task name, a URL that can never be called (userinfo, port 99999),
a webhook event that does not exist, or a directive misspelt so that it silently becomes a
custom one (``unles``), would each be accepted and then fail (or never happen) at run time.
These types refuse them when the request arrives, naming the field. They are request types
only: stored configurations are read back with the plain models, so a configuration stored
before a check existed still reads.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import StringConstraints, field_validator, model_validator

from service.engine.models import Subscription, TaskConfig
from service.outbound import url_problem
from service.webhooks.events import EVENT_TYPES

TASK_NAME_PATTERN = r"^[^#@\x00-\x1f\x7f][^#\x00-\x1f\x7f]{0,199}$"
TaskName = Annotated[str, StringConstraints(pattern=TASK_NAME_PATTERN)]
"""A task name: as any name, and not starting with ``@``, which marks events in the outbox
(an instance ``@x#0`` would be taken for an event and handed to the webhooks runner)."""

HTTP_SCHEMES = ("http://", "https://")
RUNTIME_DIRECTIVES = ("connectTimeout", "readTimeout")
"""Custom directives the service itself reads (HTTP tasks, service/worker/http_task.py)."""


CONFUSED_DIRECTIVES = {"before": "after"}
"""Directives people reach for that do not exist, with the one they mean: ``before``/``befor``
is refused like a misspelling (a task runs *after* its triggers; the original framework has no
``before``), so a configuration that can never mean what it says is caught at once."""


def known_directives() -> tuple[str, ...]:
    return (*TaskConfig.model_fields, *RUNTIME_DIRECTIVES)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def near_directive(key: str) -> str | None:
    """The known directive ``key`` is probably a misspelling of: at most 2 edits away (1 for
    directives of 4 characters or fewer, so short custom keys stay free), but not equal."""
    directives = known_directives()
    if key in directives:
        return None
    for known in directives:
        limit = 1 if len(known) <= 4 else 2
        if edit_distance(key.lower(), known.lower()) <= limit:
            return known
    for confused, meant in CONFUSED_DIRECTIVES.items():
        if edit_distance(key.lower(), confused) <= 1:
            return meant
    return None


def is_python_task_name(value: str) -> bool:
    """Dotted identifiers (``app.notify``, ``echo``); ``-`` is allowed inside a part, as in
    entry point names."""
    return all(part.replace("-", "_").isidentifier() for part in value.split("."))


class CheckedTaskConfig(TaskConfig):
    """A task as a request may give it."""

    @field_validator("run")
    @classmethod
    def _runnable(cls, value: str) -> str:
        if value.startswith(HTTP_SCHEMES):
            problem = url_problem(value)
            if problem:
                raise ValueError(f"the URL {problem}")
        elif not is_python_task_name(value):
            raise ValueError(
                "neither an http:// or https:// URL nor a Python task name (dotted "
                "identifiers such as app.notify)"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_misspelt_directive(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                known = near_directive(str(key))
                if known is not None:
                    raise ValueError(
                        f"unknown directive {key!r}: did you mean {known!r}? (a custom "
                        "directive must not be this close to a known one)"
                    )
        return data


class CheckedSubscription(Subscription):
    """A webhook subscription as a request may give it."""

    @field_validator("url")
    @classmethod
    def _callable_url(cls, value: str) -> str:
        problem = url_problem(value)
        if problem:
            raise ValueError(f"the URL {problem}")
        return value

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        unknown = [event for event in value if event != "*" and event not in EVENT_TYPES]
        if unknown:
            raise ValueError(
                f"unknown event {unknown[0]!r}: one of {', '.join(EVENT_TYPES)} or '*'"
            )
        return value
