"""scripts/serve and scripts/test install only when pyproject.toml changed.

They run from a copy of the repository's scripts and pyproject.toml whose .venv holds a
``python`` that records every ``-m pip`` call (and runs the real interpreter otherwise) and a
``triggers`` that echoes its arguments: pip is what we observe, so it is the one stand-in.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
    echo "$*" >> "$(dirname "$0")/../pip-calls"
    exit 0
fi
exec {python} "$@"
"""


def checkout(root: Path) -> Path:
    shutil.copytree(ROOT / "scripts", root / "scripts")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(FAKE_PYTHON.format(python=sys.executable))
    (bin_dir / "triggers").write_text('#!/usr/bin/env bash\necho "triggers $*"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return root


def run(root: Path, script: str, *args: str) -> str:
    result = subprocess.run(
        [str(root / "scripts" / script), *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def pip_calls(root: Path) -> list[str]:
    log = root / ".venv" / "pip-calls"
    return log.read_text().splitlines() if log.exists() else []


def test_serve_installs_once_then_only_when_pyproject_changes(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    assert run(root, "serve", "--port", "8123").strip() == "triggers serve --port 8123"
    assert pip_calls(root) == ["-m pip install --quiet --disable-pip-version-check -e ."]
    run(root, "serve")
    run(root, "serve")
    assert len(pip_calls(root)) == 1  # installed: no pip, no package index
    with (root / "pyproject.toml").open("a") as pyproject:
        pyproject.write("\n# changed\n")
    run(root, "serve")
    assert len(pip_calls(root)) == 2
    run(root, "serve")
    assert len(pip_calls(root)) == 2


def test_the_test_script_adds_the_dev_extras_once_and_serve_reuses_them(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    assert "pytest" in run(root, "test", "--version")
    assert pip_calls(root)[-1].endswith("-e .[dev]")
    run(root, "test", "--version")
    run(root, "serve")  # the dev install includes what serve needs
    assert len(pip_calls(root)) == 1
