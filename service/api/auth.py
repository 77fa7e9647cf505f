"""Bearer API keys limited to session-UID prefixes (namespaces) and scopes.

``TRIGGERS_API_KEYS`` is a JSON list; each entry names a key by the SHA-256 of its secret (the
service never stores the secret itself), the UID prefixes it may touch and its scopes::

    [{"name": "flora-app", "sha256": "<hex of sha256(secret)>",
      "prefixes": ["applicant:", "questionnaire-"], "scopes": ["read", "fire"]}]

``triggers api-key`` prints a new secret and its entry. Scopes: ``read`` (every GET),
``fire`` (POST fire), ``configure`` (PATCH/PUT config, DELETE session), ``operate`` (replay,
skip, status, metadata, logs-resolved), ``metrics`` (GET /metrics). An empty ``prefixes``
list means every session.
Presented keys are hashed and compared with every entry in constant time (hmac.compare_digest).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter

from service.api.problems import FieldError, ProblemError

Scope = Literal["read", "fire", "configure", "operate", "metrics"]
SCOPES: tuple[Scope, ...] = ("read", "fire", "configure", "operate", "metrics")


class ApiKey(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    prefixes: list[str] = Field(default_factory=list)
    scopes: list[Scope] = Field(default_factory=lambda: list(SCOPES))

    def allows_uid(self, uid: str) -> bool:
        return not self.prefixes or any(uid.startswith(prefix) for prefix in self.prefixes)


API_KEYS = TypeAdapter(list[ApiKey])


def parse_api_keys(raw: str | None) -> list[ApiKey]:
    return API_KEYS.validate_json(raw) if raw else []


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_api_key(name: str, prefixes: list[str], scopes: list[Scope]) -> tuple[str, ApiKey]:
    """A fresh random secret and the entry to put in TRIGGERS_API_KEYS."""
    secret = "trg_" + secrets.token_urlsafe(32)
    return secret, ApiKey(name=name, sha256=hash_secret(secret), prefixes=prefixes, scopes=scopes)


class Authenticator:
    """Checks a request's bearer key against the configured keys."""

    def __init__(self, keys: list[ApiKey], *, enabled: bool) -> None:
        self.keys = keys
        self.enabled = enabled

    def identify(self, authorization: str | None) -> ApiKey | None:
        """The key presented in ``Authorization: Bearer <secret>``; 401 when none is valid."""
        if not self.enabled:
            return None
        scheme, _, secret = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ProblemError(
                "unauthorized",
                "send Authorization: Bearer <api key>",
                errors=[FieldError(field="header.Authorization", message="missing bearer key")],
                headers={"WWW-Authenticate": 'Bearer realm="triggers"'},
            )
        digest = hash_secret(secret.strip())
        found = None
        for key in self.keys:  # compare with every key: timing says nothing about which
            if hmac.compare_digest(digest, key.sha256):
                found = key
        if found is None:
            raise ProblemError(
                "unauthorized",
                "unknown API key",
                errors=[FieldError(field="header.Authorization", message="unknown key")],
                headers={"WWW-Authenticate": 'Bearer realm="triggers", error="invalid_token"'},
            )
        return found

    def authorize(self, authorization: str | None, scope: Scope, uid: str | None) -> ApiKey | None:
        """401 without a valid key; 403 when the key lacks the scope or the UID's namespace.
        Returns the key (None when authentication is off)."""
        key = self.identify(authorization)
        if key is None:
            return None
        if scope not in key.scopes:
            raise ProblemError("forbidden", f"API key {key.name!r} lacks the {scope!r} scope")
        if uid is not None and not key.allows_uid(uid):
            raise ProblemError(
                "forbidden",
                f"API key {key.name!r} may not touch session {uid!r}",
                errors=[FieldError(field="path.uid", message="outside the key's prefixes")],
            )
        return key
