"""Installable beside other tools: pip keeps a torch that satisfies the range (checked with
`pip install --dry-run`, no network), and the wheel carries the command, the typing marker and
the charts extra, and nothing from the checkout's root."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
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


# --- the demo from an installed wheel ---------------------------------------------------------

SAMPLE = ROOT / "sensaudit" / "sample"
SAMPLE_FILES = sorted(f"sensaudit/sample/{p.relative_to(SAMPLE)}" for p in SAMPLE.rglob("*")
                      if p.is_file() and "reports" not in p.parts)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The wheel built as `python -m build` builds it: an sdist of a checkout, then the wheel
    from that sdist alone. The checkout is copied as it is after a test run (caches, tests/,
    the reports a config of the sample run in place writes beside it), so that what the wheel
    must leave out is there to leave out."""
    tmp = tmp_path_factory.mktemp("build")
    checkout = tmp / "checkout"
    checkout.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "__main__.py"):
        shutil.copy(ROOT / name, checkout / name)
    for name in ("sensaudit", "tests"):
        shutil.copytree(ROOT / name, checkout / name, ignore=shutil.ignore_patterns(".*"))
    stray = checkout / "sensaudit" / "sample" / "reports" / "scorer_v1"
    stray.mkdir(parents=True, exist_ok=True)
    (stray / "summary.json").write_text("{}")
    (checkout / "sensaudit" / "__pycache__").mkdir(exist_ok=True)
    (checkout / "sensaudit" / "__pycache__" / "api.cpython-311.pyc").write_bytes(b"\0")
    dist = tmp / "dist"
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import build_meta; "
         "print(build_meta.build_sdist(sys.argv[1]))", str(dist)],
        capture_output=True, text=True, cwd=checkout, timeout=600)
    assert done.returncode == 0, done.stderr
    (sdist,) = dist.glob("sensaudit-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        archive.extractall(tmp / "unpacked", filter="data")
    for name in SAMPLE_FILES + ["sensaudit-0.1.0/LICENSE", "sensaudit-0.1.0/README.md"]:
        assert name in names or f"sensaudit-0.1.0/{name}" in names, name
    done = _pip("wheel", "--no-deps", "-w", str(dist), str(tmp / "unpacked" / "sensaudit-0.1.0"),
                cwd=tmp)
    assert done.returncode == 0, done.stderr
    (wheel,) = dist.glob("sensaudit-*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_ships_the_sample_and_nothing_of_the_checkout(built):
    with zipfile.ZipFile(built) as archive:
        names = archive.namelist()
        metadata = archive.read("sensaudit-0.1.0.dist-info/METADATA").decode()
        shipped = {name: archive.getinfo(name).file_size for name in names}
    assert "sensaudit/py.typed" in names
    assert sorted(n for n in names if n.startswith("sensaudit/sample/")) == SAMPLE_FILES
    for name in SAMPLE_FILES:
        assert shipped[name] == (ROOT / name).stat().st_size
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n
                or n.endswith((".pyc", ".pyo")) or "/reports/" in n and "sample" in n]
    assert sum(shipped[n] for n in SAMPLE_FILES) < 600_000
    assert built.stat().st_size < 1_000_000
    # The index page: the README as markdown, the licence file.
    assert "Description-Content-Type: text/markdown" in metadata
    assert "License-File: LICENSE" in metadata
    assert "sensaudit-0.1.0.dist-info/licenses/LICENSE" in names


@pytest.mark.slow
def test_sensaudit_demo_runs_from_the_installed_wheel(built, tmp_path):
    """A fresh venv outside the checkout holds the wheel; its dependencies come from this
    environment's site-packages through a .pth (no network), which names that folder only:
    the .pth files inside it (this checkout's editable install) are not run, so the code that
    runs is the wheel's."""
    venv = tmp_path / "venv"
    # No PYTHONPATH for pip either: a checkout on it (its sensaudit.egg-info) would read as
    # "already installed" and the wheel would be skipped.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
           and not k.startswith("GITHUB_")}
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                           "install", "--no-index", "--no-deps", "--disable-pip-version-check",
                           str(built)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert ROOT not in outside.parents

    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import sensaudit, sys; print(sensaudit.__file__); print(sys.path)"],
                           capture_output=True, text=True, cwd=outside, env=env, timeout=120)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.splitlines()[0]).is_relative_to(site / "sensaudit")
    # The checkout itself is not importable (its venv's site-packages may sit inside it, as
    # `make test` puts it, and is the dependencies' folder).
    path = ast.literal_eval(where.stdout.splitlines()[1])
    assert str(ROOT) not in path and "" not in path[1:]

    demo = subprocess.run([str(venv / "bin" / "sensaudit"), "demo", "try-it"],
                          capture_output=True, text=True, cwd=outside, env=env, timeout=600)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    lines = demo.stdout.splitlines()
    assert lines[0] == ("copied the sample into try-it: 7 files in configs/ and sample_data/; "
                        "the story runs there")
    assert lines[-2].startswith("== demo OK: v1's suspected proxy copy_length found (exit 1)")
    assert "reports in try-it/reports/" in lines[-2]
    assert "copy_length vs quality: correlation +0.547 -> +0.015" in demo.stdout
    reports = outside / "try-it" / "reports"
    v1 = json.loads((reports / "scorer_v1" / "summary.json").read_text())
    v2 = json.loads((reports / "scorer_v2" / "summary.json").read_text())
    assert v1["passed"] is False and [s["feature"] for s in v1["suspects"]] == ["copy_length"]
    assert v2["passed"] is True and v2["suspects"] == []
    assert json.loads((reports / "compare" / "comparison.json").read_text())["passed"] is True
    for name in ("scorer_v1/report.html", "compare/comparison.html", "scorer_v2/report.md"):
        assert (reports / name).stat().st_size > 1000, name
    # The copied sample is the package's, byte for byte.
    for name in SAMPLE_FILES:
        copied = outside / "try-it" / name.removeprefix("sensaudit/sample/")
        assert copied.read_bytes() == (ROOT / name).read_bytes()

    again = subprocess.run([str(venv / "bin" / "sensaudit"), "demo", "try-it"],
                           capture_output=True, text=True, cwd=outside, env=env, timeout=120)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.startswith("Error: try-it/configs/scorer_v1.yaml: already exists;")
