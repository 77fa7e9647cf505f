"""The format of a signing secret, checked where one is given (settings, subscriptions).

A module of its own, with no imports of the service, so that settings can check it without
loading the engine.
"""

from __future__ import annotations

import base64
import binascii


def check_signing_secret(value: str) -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 to 64 random bytes."""
    key = value.removeprefix("whsec_")
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not value.startswith("whsec_") or not 24 <= len(raw) <= 64:
        raise ValueError("a signing secret is 'whsec_' + base64 of 24 to 64 bytes")
    return value
