"""Start-up refuses a topology that cannot work: state on a Redis Cluster with the default
broker (the state Redis). Dramatiq's Redis broker is not cluster-safe: fires answered
``scheduled`` and nothing ever ran (workers logged ``MovedError``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.redis_server import RedisClusterServer
from service.settings import Settings
from service.worker.broker import TopologyError, check_topology


def cluster_env(cluster: RedisClusterServer, tmp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
    env.update({"TRIGGERS_REDIS_URL": cluster.url, "TRIGGERS_REDIS_CLUSTER": "true",
                "TRIGGERS_AUTH": "off", "TRIGGERS_DATA_DIR": tmp})  # fmt: skip
    return env


@pytest.mark.parametrize("command", [["worker", "--processes", "1"], ["serve", "--port", "0"]])
def test_cluster_state_with_the_default_broker_refuses_to_start_in_one_line(
    redis_cluster: RedisClusterServer, tmp_path: object, command: list[str]
) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "service.cli", *command], env=cluster_env(redis_cluster,
        str(tmp_path)), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert process.returncode == 2, process.stderr
    [line] = process.stderr.strip().splitlines()
    assert "TRIGGERS_BROKER_URL" in line and "TRIGGERS_REDIS_CLUSTER" in line


def test_the_check_names_the_fix_and_accepts_a_separate_broker() -> None:
    cluster = {"redis_url": "redis://127.0.0.1:7000/0", "redis_cluster": True}
    with pytest.raises(TopologyError, match="TRIGGERS_BROKER_URL"):
        check_topology(Settings.model_validate(cluster))
    with pytest.raises(TopologyError):  # the cluster named again as the broker
        check_topology(Settings.model_validate({**cluster, "broker_url": cluster["redis_url"]}))
    check_topology(Settings.model_validate({**cluster, "broker_url": "amqp://127.0.0.1:5672"}))
    check_topology(Settings.model_validate({"redis_url": "redis://127.0.0.1:7000/0"}))
