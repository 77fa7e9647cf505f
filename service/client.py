"""A small HTTP client of the Triggers API (httpx), used by the command line and by Python apps.

Where it calls: the ``base_url`` given, else ``TRIGGERS_URL``, else http://127.0.0.1:8000; the
API key likewise from ``TRIGGERS_API_KEY``. Errors are ``TriggersError``s:
``TriggersHTTPError`` carries the problem document the service answered,
``TriggersUnreachable`` says that no answer came (the service is down or the URL is wrong).

Deliberately light (httpx only): the command line imports it, and must start fast.
"""

from __future__ import annotations

import os
import uuid
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class TriggersError(Exception):
    """Anything that kept a call from getting a successful answer."""


class TriggersHTTPError(TriggersError):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status}: {problem.get('detail') or problem.get('title')}")
        self.status = status
        self.problem = problem


class TriggersUnreachable(TriggersError):
    """No HTTP answer at all: connection refused, timed out, name not resolved, bad URL."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the service at {url} ({reason})")
        self.url = url
        self.reason = reason


def default_url() -> str:
    return os.environ.get("TRIGGERS_URL") or DEFAULT_URL


def default_api_key() -> str | None:
    return os.environ.get("TRIGGERS_API_KEY") or None


class TriggersClient:
    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, timeout: float = 10.0
    ) -> None:
        self.base_url = base_url or default_url()
        api_key = api_key or default_api_key()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, body: Any = None, idempotent: bool = True) -> Any:
        headers = {"Idempotency-Key": str(uuid.uuid4())} if idempotent and method != "GET" else {}
        try:
            response = self.http.request(method, path, json=body, headers=headers)
        except httpx.TransportError as error:
            raise TriggersUnreachable(self.base_url, str(error) or type(error).__name__) from error
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:200]}
            if not isinstance(problem, dict):
                problem = {"detail": str(problem)[:200]}
            raise TriggersHTTPError(response.status_code, problem)
        try:
            return response.json() if response.content else None
        except ValueError:
            raise TriggersError(
                f"{self.base_url} answered {response.status_code} with something that is not "
                "JSON: is it the Triggers service?"
            ) from None

    @staticmethod
    def _session(uid: str) -> str:
        return f"/sessions/{quote(uid, safe='')}"

    def configure(self, uid: str, config: dict[str, Any], *, replace: bool = False) -> Any:
        return self._call("PUT" if replace else "PATCH", self._session(uid) + "/config", config)

    def fire(self, uid: str, trigger: str, kwargs: dict[str, Any] | None = None) -> Any:
        body = {"trigger": trigger, "kwargs": kwargs or {}}
        return self._call("POST", self._session(uid) + "/fire", body)

    def session(self, uid: str) -> Any:
        return self._call("GET", self._session(uid))

    def unresolved_tasks(self, uid: str) -> Any:
        return self._call("GET", self._session(uid) + "/tasks/unresolved")

    def unresolved_instances(self, uid: str) -> Any:
        return self._call("GET", self._session(uid) + "/instances/unresolved")

    def replay(self, uid: str, name: str, kwargs: dict[str, Any] | None = None) -> Any:
        body = {} if kwargs is None else {"kwargs": kwargs}
        path = f"{self._session(uid)}/instances/{quote(name, safe='')}/replay"
        return self._call("POST", path, body)

    def skip(self, uid: str, name: str, *, cascade: bool = False) -> Any:
        path = f"{self._session(uid)}/instances/{quote(name, safe='')}/skip"
        return self._call("POST", path, {"cascade": cascade})

    def delete(self, uid: str) -> None:
        self._call("DELETE", self._session(uid))
