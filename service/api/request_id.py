"""``X-Request-ID``: echoed when the client sends a usable one, generated otherwise, on every
response, and bound (with the session UID of the path) to every log line of the request. The
front layer (service/api/front.py) does it with these helpers."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

HEADER = b"x-request-id"
USABLE = re.compile(rb"[A-Za-z0-9._:@+\-]{1,128}")
"""What is echoed: short, no spaces or control characters (a header value must stay one)."""


def usable_request_id(value: bytes) -> str | None:
    """The client's request ID when it can be echoed as is, else None."""
    return value.decode("latin-1") if USABLE.fullmatch(value) else None


def new_request_id() -> str:
    """32 random hex digits (``os.urandom``: a uuid4 without building the UUID object)."""
    return os.urandom(16).hex()


def path_uid(path: str) -> str | None:
    parts = path.split("/", 3)
    if len(parts) > 2 and parts[1] == "sessions" and parts[2]:
        return unquote(parts[2])[:200]
    return None
