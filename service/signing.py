"""The signing secret and Standard Webhooks signatures (webhooks and HTTP tasks alike).

The secret is ``TRIGGERS_WEBHOOK_SECRET`` (``whsec_`` + base64), or one generated once per
deployment and kept in the state Redis (``<prefix>:webhook-secret``, set only if absent), so
every process of one deployment signs alike wherever it was started: an API and a worker
started in different folders used to generate a secret each, and receivers then refused
every message. Each process also writes the deployment's secret to
``TRIGGERS_DATA_DIR/webhook-secret`` (mode 0600) for receivers on that machine; a secret
generated there before it was kept in Redis becomes the deployment's (first come). Signing
uses the ``standardwebhooks`` library, so any official verifier accepts the signature.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from redis import Redis
from redis.cluster import RedisCluster
from standardwebhooks.webhooks import Webhook

from service.settings import Settings

SECRET_FILE = "webhook-secret"
SECRET_KEY = "webhook-secret"
log = logging.getLogger(__name__)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def deployment_secret(settings: Settings) -> str:
    """The secret every process of the deployment signs with (see the module's notes).

    Read once per process at start, with a short-lived synchronous client (one SET NX and
    one GET), before any task or delivery is signed."""
    if settings.webhook_secret:
        return settings.webhook_secret
    assert settings.redis_url, "the state Redis is needed to share the signing secret"
    path = Path(settings.data_dir) / SECRET_FILE
    local = path.read_text().strip() if path.exists() else None
    client: Redis | RedisCluster = (
        RedisCluster.from_url(settings.redis_url, decode_responses=True)
        if settings.redis_cluster
        else Redis.from_url(settings.redis_url, decode_responses=True)
    )
    key = f"{settings.key_prefix}:{SECRET_KEY}"
    try:
        client.set(key, local or new_secret(), nx=True)
        secret = str(client.get(key))
    finally:
        client.close()
    if local != secret:
        if local is not None:
            log.warning("%s held another secret than the deployment's (kept in Redis, %s): "
                        "replaced by the deployment's", path, key)  # fmt: skip
        write_secret_file(path, secret)
    return secret


def write_secret_file(path: Path, secret: str) -> None:
    """Written whole to a private temporary file, then renamed into place: a reader never
    sees a half-written secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret-")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(secret + "\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


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
