"""A small HTTP client of the Triggers API (httpx), used by the command line and by Python apps.

Errors come back as ``TriggersHTTPError`` carrying the problem document the service answered.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import httpx


class TriggersHTTPError(Exception):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status}: {problem.get('detail') or problem.get('title')}")
        self.status = status
        self.problem = problem


class TriggersClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, body: Any = None, idempotent: bool = True) -> Any:
        headers = {"Idempotency-Key": str(uuid.uuid4())} if idempotent and method != "GET" else {}
        response = self.http.request(method, path, json=body, headers=headers)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text}
            raise TriggersHTTPError(response.status_code, problem)
        return response.json() if response.content else None

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
