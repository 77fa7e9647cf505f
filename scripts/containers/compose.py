"""docker-compose.yml run by podman, the way ``docker compose`` would run it.

No Docker daemon and no ``docker compose`` exist here, and the test must run the services with
exactly the values the compose file gives them. This module reads the file (interpolating
``${VAR:-default}`` like compose), picks the services of the active profiles and turns every
key of each service into the matching ``podman run`` option. A key it does not know fails the
test: nothing in the compose file goes untested.

The one deliberate difference is the network. All containers share one private network
namespace made for the test (``ip netns add``): every service listens on its own port as in
the file, services reach each other by their names (``--add-host NAME:127.0.0.1``), and the
test itself runs inside the same namespace, so every request stays on a loopback interface
that nothing else on this machine can reach, and no port can clash with another test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PODMAN = ["podman", "--runtime", "runc"]

# Every service key the translation below implements.
KNOWN_KEYS = {
    "image", "build", "command", "environment", "env_file", "read_only", "tmpfs", "cap_drop",
    "security_opt", "restart", "depends_on", "volumes", "healthcheck", "stop_grace_period",
    "ports", "profiles", "hostname",
}  # fmt: skip

_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``${VAR}`` and ``${VAR:-default}`` in every string, as compose does."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def seconds(duration: str | int | float) -> float:
    """A compose duration (``45s``, ``1m30s``, ``500ms``) in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def podman(
    *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run podman; on failure (with ``check``) an AssertionError that shows its output."""
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {result.returncode}\n"
                             f"{result.stdout}{result.stderr}")  # fmt: skip
    return result


@dataclass
class Stack:
    """The enabled services of a compose file, run as containers named ``<prefix>-<service>``."""

    compose_file: Path
    netns: str
    prefix: str
    profiles: set[str] = field(default_factory=set)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    scale: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        raw = yaml.safe_load(self.compose_file.read_text())
        self.model: dict[str, Any] = interpolate(raw, self.env)
        self.project_dir = self.compose_file.parent
        for name, service in self.model["services"].items():
            unknown = set(service) - KNOWN_KEYS
            assert not unknown, f"service {name}: compose keys the test does not run: {unknown}"

    def enabled(self) -> list[str]:
        """Services without profiles, and those of an active profile, in file order."""
        return [name for name, s in self.model["services"].items()
                if not s.get("profiles") or self.profiles & set(s["profiles"])]  # fmt: skip

    def order(self) -> list[str]:
        """Enabled services, each after those it depends on (start in this order, stop in
        the reverse one)."""
        done: list[str] = []

        def visit(name: str) -> None:
            if name in done or name not in self.enabled():
                return
            for dependency in _depends_on(self.service(name).get("depends_on")):
                visit(dependency)
            done.append(name)

        for name in self.enabled():
            visit(name)
        return done

    def service(self, name: str) -> dict[str, Any]:
        return dict(self.model["services"][name])

    def containers(self, name: str) -> list[str]:
        count = self.scale.get(name, 1)
        if count == 1:
            return [f"{self.prefix}-{name}"]
        return [f"{self.prefix}-{name}-{i}" for i in range(1, count + 1)]

    def volume(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def grace(self, name: str) -> float:
        """stop_grace_period (compose's default: 10 s)."""
        return seconds(self.service(name).get("stop_grace_period", "10s"))

    def published_ports(self, name: str) -> list[int]:
        """Container ports of ``ports`` (the test reaches them on 127.0.0.1 in its namespace)."""
        return [int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in
                self.service(name).get("ports", [])]  # fmt: skip

    def run_args(self, name: str, container: str) -> list[str]:
        """``podman run`` arguments for one container of service ``name``."""
        s = self.service(name)
        args = ["run", "--detach", "--name", container, "--network", f"ns:/run/netns/{self.netns}"]
        args += [f"--add-host={other}:127.0.0.1" for other in self.model["services"]]
        if "hostname" in s:
            args += ["--hostname", s["hostname"]]
        for env_file in _list(s.get("env_file")):
            path = env_file["path"] if isinstance(env_file, dict) else env_file
            args += ["--env-file", str(self.project_dir / path)]
        for key, value in _environment(s.get("environment")).items():
            args += ["--env", f"{key}={value}"]
        if s.get("read_only"):
            args.append("--read-only")
        args += [f"--tmpfs={path}" for path in _list(s.get("tmpfs"))]
        args += [f"--cap-drop={cap}" for cap in s.get("cap_drop", [])]
        args += [f"--security-opt={opt.replace(':true', '')}" for opt in s.get("security_opt", [])]
        if "restart" in s:
            args += ["--restart", s["restart"]]
        for volume in s.get("volumes", []):
            source, target = volume.split(":", 1)
            assert source in (self.model.get("volumes") or {}), f"undeclared volume {source}"
            args += ["--volume", f"{self.volume(source)}:{target}"]
        args += ["--stop-timeout", str(int(self.grace(name)))]
        args += _healthcheck(s.get("healthcheck"))
        command = s.get("command", [])
        assert isinstance(command, list), f"{name}: command in exec form, please"
        return [*args, s["image"], *command]

    def up(self, name: str) -> None:
        """Start a service once the services it depends on are started or healthy."""
        for dependency, rule in _depends_on(self.service(name).get("depends_on")).items():
            if dependency not in self.enabled():
                assert rule.get("required", True) is False, f"{name} needs {dependency}"
                continue
            if rule.get("condition") == "service_healthy":
                for container in self.containers(dependency):
                    self.wait_healthy(container)
        for container in self.containers(name):
            podman(*self.run_args(name, container))

    def wait_healthy(self, container: str, timeout: float = 120) -> float:
        """Run the container's health check (compose's or the image's) until it passes."""
        start = time.monotonic()
        while True:
            result = podman("healthcheck", "run", container, check=False)
            if result.returncode == 0:
                return time.monotonic() - start
            state = podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
            if state != "running" or time.monotonic() - start > timeout:
                raise AssertionError(f"{container} not healthy ({state}): {result.stdout}"
                                     f"{result.stderr}\n{self.logs(container)}")  # fmt: skip
            time.sleep(1)

    def stop(self, container: str, grace: float) -> tuple[int, float]:
        """``podman stop`` (SIGTERM, SIGKILL after the grace period): exit code and seconds."""
        start = time.monotonic()
        podman("stop", container, timeout=grace + 60)
        took = time.monotonic() - start
        code = podman("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
        return int(code), took

    def start(self, container: str) -> None:
        podman("start", container)

    def wait_logged(self, container: str, text: str, count: int, since: float,
                    timeout: float = 120) -> None:  # fmt: skip
        """Until the container has logged ``text`` ``count`` times since ``since`` (epoch)."""
        deadline = time.monotonic() + timeout
        while True:
            logs = podman("logs", "--since", f"{int(since)}", container, check=False)
            if (logs.stdout + logs.stderr).count(text) >= count:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{container} never logged {text!r} x{count}\n"
                                     f"{self.logs(container)}")  # fmt: skip
            time.sleep(1)

    def logs(self, container: str) -> str:
        result = podman("logs", "--tail", "60", container, check=False)
        return f"--- logs of {container}:\n{result.stdout}{result.stderr}"

    def down(self) -> None:
        """Remove every container and volume of this stack."""
        for name in self.model["services"]:
            for container in self.containers(name):
                podman("rm", "--force", "--time", "5", container, check=False)
        for volume in self.model.get("volumes") or {}:
            podman("volume", "rm", "--force", self.volume(volume), check=False)


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _environment(value: Any) -> dict[str, str]:
    if isinstance(value, list):
        return dict(item.split("=", 1) for item in value)
    return {k: "" if v is None else str(v) for k, v in (value or {}).items()}


def _depends_on(value: Any) -> dict[str, dict[str, Any]]:
    if isinstance(value, list):
        return {name: {"condition": "service_started"} for name in value}
    return dict(value or {})


def _healthcheck(check: dict[str, Any] | None) -> list[str]:
    """podman's health options for a compose healthcheck (none: the image's HEALTHCHECK)."""
    if check is None:
        return []
    if check.get("disable"):
        return ["--no-healthcheck"]
    test = check["test"]
    assert test[0] in ("CMD", "CMD-SHELL"), f"healthcheck test {test}"
    command = json.dumps(test[1:]) if test[0] == "CMD" else test[1]
    args = ["--health-cmd", command]
    options = {"interval": "--health-interval", "timeout": "--health-timeout",
               "start_period": "--health-start-period"}  # fmt: skip
    for key, option in options.items():
        if key in check:
            args += [option, f"{seconds(check[key]):g}s"]
    if "retries" in check:
        args += ["--health-retries", str(check["retries"])]
    return args
