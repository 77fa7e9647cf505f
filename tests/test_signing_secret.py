"""Issue 8.7: one deployment, one signing secret, whatever folder each process started in."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError
from redis import Redis

from service.settings import Settings
from service.signing import SECRET_FILE, SECRET_KEY, deployment_secret

GIVEN = "whsec_" + "QUJD" * 8


def settings(redis_url: str, prefix: str, folder: Path, **extra: object) -> Settings:
    return Settings.model_validate(
        {"redis_url": redis_url, "key_prefix": prefix, "data_dir": folder, **extra}
    )


def test_processes_in_different_folders_share_one_secret(redis_url: str, tmp_path: Path) -> None:
    prefix = f"sec-{uuid.uuid4().hex[:8]}"
    api, worker = tmp_path / "api", tmp_path / "worker"
    first = deployment_secret(settings(redis_url, prefix, api))
    assert deployment_secret(settings(redis_url, prefix, worker)) == first
    for folder in (api, worker):  # the copy receivers on this machine read
        assert (folder / SECRET_FILE).read_text().strip() == first
        assert (folder / SECRET_FILE).stat().st_mode & 0o077 == 0
    other = deployment_secret(settings(redis_url, f"{prefix}-2", tmp_path / "other"))
    assert other != first  # another deployment (key prefix) has its own


def test_a_secret_generated_before_becomes_the_deployments(redis_url: str, tmp_path: Path) -> None:
    prefix = f"sec-{uuid.uuid4().hex[:8]}"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / SECRET_FILE).write_text(GIVEN + "\n")
    assert deployment_secret(settings(redis_url, prefix, tmp_path / "old")) == GIVEN
    assert deployment_secret(settings(redis_url, prefix, tmp_path / "new")) == GIVEN
    (tmp_path / "stray").mkdir()  # a folder holding another one: replaced, with a warning
    (tmp_path / "stray" / SECRET_FILE).write_text("whsec_" + "WFla" * 8 + "\n")
    assert deployment_secret(settings(redis_url, prefix, tmp_path / "stray")) == GIVEN
    assert (tmp_path / "stray" / SECRET_FILE).read_text().strip() == GIVEN


def test_a_configured_secret_is_used_as_it_is_and_nothing_is_stored(
    redis_url: str, tmp_path: Path
) -> None:
    prefix = f"sec-{uuid.uuid4().hex[:8]}"
    assert deployment_secret(settings(redis_url, prefix, tmp_path, webhook_secret=GIVEN)) == GIVEN
    assert Redis.from_url(redis_url).exists(f"{prefix}:{SECRET_KEY}") == 0
    assert not (tmp_path / SECRET_FILE).exists()


@pytest.mark.parametrize("secret", ["abc", "whsec_", "whsec_not base64!", "whsec_c2hvcnQ="])
def test_a_malformed_configured_secret_is_refused_at_start(secret: str) -> None:
    with pytest.raises(ValidationError, match="webhook_secret"):
        Settings(webhook_secret=secret)


@pytest.mark.parametrize(
    "webhooks",
    ['[{"url": "https://u:p@hooks.example.com/"}]', '[{"url": "not a url"}]',
     '[{"url": "https://hooks.example.com/", "events": ["nope"]}]',
     '[{"url": "https://hooks.example.com/", "secret": "abc"}]', "not json"],
)  # fmt: skip
def test_global_subscriptions_are_checked_at_start(webhooks: str) -> None:
    with pytest.raises(ValidationError, match="webhooks"):
        Settings(webhooks=webhooks)


def test_valid_global_subscriptions_are_accepted() -> None:
    hooks = f'[{{"url": "https://hooks.example.com/", "events": ["*"], "secret": "{GIVEN}"}}]'
    assert Settings(webhooks=hooks).webhooks == hooks
