"""The signing secret and Standard Webhooks signatures (webhooks and HTTP tasks alike).

The secret is ``TRIGGERS_WEBHOOK_SECRET`` (``whsec_`` + base64), or one generated on first
start and kept in ``TRIGGERS_DATA_DIR/webhook-secret`` (mode 0600) so that every process of
one deployment signs alike. Signing uses the ``standardwebhooks`` library, so any official
verifier accepts the signature.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from standardwebhooks.webhooks import Webhook

SECRET_FILE = "webhook-secret"


def load_or_create_secret(configured: str | None, data_dir: Path) -> str:
    if configured:
        return configured
    path = Path(data_dir) / SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    # Written whole to a private temporary file, then linked into place: two processes (or
    # threads) starting at once never see a half-written secret, and the first link wins.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret-")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(secret + "\n")
        os.link(temporary, path)
    except FileExistsError:
        return path.read_text().strip()
    finally:
        os.unlink(temporary)
    return secret


class Signer:
    def __init__(self, secret: str) -> None:
        self.webhook = Webhook(secret)

    def headers(self, message_id: str, body: str) -> dict[str, str]:
        """webhook-id, webhook-timestamp and webhook-signature for ``body``."""
        now = datetime.now(tz=UTC)
        signature = self.webhook.sign(message_id, now, body)
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
