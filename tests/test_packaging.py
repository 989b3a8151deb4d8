"""Installable beside other tools: pip keeps a torch that satisfies the range (checked with
`pip install --dry-run`, no network), and the wheel carries the command, the typing marker and
the charts extra, and nothing from the checkout's root."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The files a build reads, copied, so the build leaves nothing in the checkout."""
    folder = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE", "__main__.py"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(ROOT / "sensaudit", folder / "sensaudit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # --no-index: nothing is downloaded; --no-build-isolation: the installed setuptools builds.
    return subprocess.run([sys.executable, "-m", "pip", *args, "--no-index",
                           "--no-build-isolation", "--disable-pip-version-check"],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def test_pip_install_keeps_the_installed_torch(source, tmp_path):
    done = _pip("install", "--dry-run", "--report", str(tmp_path / "plan.json"), str(source),
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    installs = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                for item in plan["install"]}
    # Only sensaudit itself: the torch already here (the dev pin) satisfies torch>=2.8.
    assert set(installs) == {"sensaudit"}, installs
    assert torch.__version__.startswith("2.13")


def test_a_torch_outside_the_range_would_not_resolve(source, tmp_path):
    """The same check can fail: asking for a torch nobody has installed finds no way."""
    done = _pip("install", "--dry-run", str(source), "torch>=99", cwd=tmp_path)
    assert done.returncode != 0
    assert "torch" in done.stderr


def test_the_wheel_has_the_command_and_the_extras(source, tmp_path):
    done = _pip("wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(source), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("sensaudit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(info).decode()
        entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "sensaudit/py.typed" in names and "sensaudit/cli/app.py" in names
    assert "__main__.py" not in names  # the checkout's root helper is not packaged
    assert "sensaudit = sensaudit.cli.app:app" in entry_points
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert "Requires-Dist: torch>=2.8" in requires
    assert any(r.startswith("Requires-Dist: matplotlib>=3.10") and "charts" in r
               for r in requires)
    assert "Provides-Extra: charts" in metadata
    # The licence pyproject declares ships with the wheel, and the index page says it.
    assert any(n.endswith("LICENSE") and ".dist-info/" in n for n in names)
    assert "Classifier: License :: OSI Approved :: Apache Software License" in metadata
