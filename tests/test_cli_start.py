"""Starting out: a fast --help and --version (torch imported only when needed), -h, plain
flags, `python -m sensaudit` from the checkout and from the folder above it, `sensaudit init`,
an optional report section, and run's --out, --data and --format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from audit_setup import FEATURES, write_assets, write_config
from models import Linear, save_exported
from typer.testing import CliRunner

import sensaudit
from sensaudit import load_config, parse_config
from sensaudit.cli.app import app
from sensaudit.reports import WRITERS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "numpy", "pyarrow", "matplotlib")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return write_assets(tmp_path_factory.mktemp("start_assets"))


def _run(*args: str):
    return CliRunner(env={"COLUMNS": "1000"}).invoke(app, list(args))


def _python(*args: str, cwd: Path, pythonpath: str | None = str(ROOT)
            ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


# --- fast start -------------------------------------------------------------------------------


def test_importing_the_cli_loads_no_torch_pandas_or_numpy(tmp_path):
    code = ("import sys, sensaudit.cli.app; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    proc = _python("-c", code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["run", "--help"], ["-h"]])
def test_help_and_version_import_no_torch(tmp_path, args):
    proc = _python("-X", "importtime", "-m", "sensaudit", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "sensaudit" in imported and not imported & set(HEAVY)
    if args == ["--version"]:
        assert proc.stdout == f"sensaudit {sensaudit.__version__}\n"


def test_library_names_load_on_first_use(tmp_path):
    code = ("import sys, sensaudit; before = 'torch' in sys.modules; "
            "sensaudit.run_audit; print(before, 'torch' in sys.modules)")
    proc = _python("-c", code, cwd=tmp_path)
    assert proc.stdout.strip() == "False True", proc.stderr


# --- help -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["run"], ["compare"], ["init"]])
def test_dash_h_is_help_and_flags_show_no_value_placeholder(command):
    short, long = _run(*command, "-h"), _run(*command, "--help")
    assert short.exit_code == 0 and short.stdout == long.stdout
    assert "<bool>" not in short.stdout and "configs/" not in short.stdout
    if command:
        assert "Example:" in short.stdout and f"sensaudit {command[0]}" in short.stdout


def test_quiet_is_a_plain_flag():
    help_text = _run("run", "-h").stdout
    assert "  -q, --quiet  " in help_text or "-q, --quiet " in help_text
    # A flag takes no value: "--quiet true" reads "true" as an unexpected argument.
    assert _run("run", "x.yaml", "--quiet", "true").exit_code == 2


# --- python -m sensaudit ----------------------------------------------------------------------


def _cli_loaded_from(verbose_stderr: str) -> Path:
    """Where `python -v` says sensaudit/cli/app.py came from ("code object from <source>" when it
    compiled it, "<pyc> matches <source>" when its cache was fresh)."""
    for line in verbose_stderr.splitlines():
        if line.startswith("#") and line.endswith("cli/app.py") and (
                "code object from" in line or " matches " in line):
            return Path(line.rsplit(" ", 1)[1]).resolve()
    raise AssertionError("python -v shows no cli/app.py")


def test_python_dash_m_from_the_checkout_folder(tmp_path):
    proc = _python("-v", "-m", "sensaudit", "--version", cwd=ROOT, pythonpath=None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"sensaudit {sensaudit.__version__}\n"
    assert _cli_loaded_from(proc.stderr) == (ROOT / "sensaudit" / "cli" / "app.py").resolve()


@pytest.mark.slow
def test_python_dash_m_from_the_folder_holding_the_checkout(tmp_path):
    """A checkout named sensaudit seen from its parent is a namespace package: the root's
    __main__.py runs the package it holds (this checkout's, not an installed copy)."""
    (tmp_path / "sensaudit").symlink_to(ROOT, target_is_directory=True)
    proc = _python("-v", "-m", "sensaudit", "--version", cwd=tmp_path, pythonpath=None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"sensaudit {sensaudit.__version__}\n"
    assert _cli_loaded_from(proc.stderr) == (ROOT / "sensaudit" / "cli" / "app.py").resolve()
    bad = _python("-m", "sensaudit", "run", "nope.yaml", cwd=tmp_path, pythonpath=None)
    assert (bad.returncode, bad.stderr) == (2, "Error: nope.yaml: config file not found\n")


# --- init -------------------------------------------------------------------------------------


def test_init_writes_a_commented_config_that_runs_as_is(tmp_path, assets, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run("init", str(assets / "scorer.pt2"), str(assets / "eval.csv"),
                  "--label", "quality")
    assert result.exit_code == 0, result.output
    assert result.stdout == ("Wrote sensaudit.yaml: 3 features, id ad_id, label quality, "
                             "1 output(s). Declare the proxies in audit.proxies, then run: "
                             "sensaudit run sensaudit.yaml\n")
    text = (tmp_path / "sensaudit.yaml").read_text(encoding="utf-8")
    assert text.startswith("# sensaudit starter config") and "# none | sigmoid | softmax" in text
    raw = yaml.safe_load(text)
    assert raw["data"]["features"] == FEATURES and raw["data"]["id"] == "ad_id"
    config = load_config(tmp_path / "sensaudit.yaml")
    assert config.model is not None and config.model.path == assets / "scorer.pt2"
    assert config.report.dir == tmp_path / "reports" / "sensaudit"
    ran = _run("run", "sensaudit.yaml", "--quiet")
    assert ran.exit_code == 0, ran.output
    assert (tmp_path / "reports" / "sensaudit" / "junit.xml").is_file()


def test_init_refuses_to_overwrite(tmp_path, assets):
    target = tmp_path / "mine.yaml"
    target.write_text("# hand-written\n", encoding="utf-8")
    result = _run("init", str(assets / "scorer.pt2"), str(assets / "eval.csv"), "--label",
                  "quality", "--config", str(target))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {target}: already exists; sensaudit init does not "
                             "overwrite a config (remove it, or pass --config with another "
                             "name)\n")
    assert target.read_text(encoding="utf-8") == "# hand-written\n"


def test_init_checks_the_models_input_width(tmp_path, assets):
    # Without --label the numeric label is a 4th column; the model takes 3.
    result = _run("init", str(assets / "scorer.pt2"), str(assets / "eval.csv"), "--config",
                  str(tmp_path / "s.yaml"))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {assets / 'scorer.pt2'}: {assets / 'eval.csv'} has 4 "
                             "numeric feature columns (length, clarity, noise, quality) but the "
                             "model takes 3 input features; pass --label or --id for columns "
                             "that are not inputs, or write data.features by hand\n")
    assert not (tmp_path / "s.yaml").exists()


def test_init_for_a_classifier_suggests_names_and_a_transform(tmp_path, assets):
    target = tmp_path / "multi.yaml"
    result = _run("init", str(assets / "multi.pt2"), str(assets / "eval.csv"), "--label",
                  "quality", "--config", str(target))
    assert result.exit_code == 0, result.output
    text = target.read_text(encoding="utf-8")
    assert "# output_names: [output_0, output_1]" in text
    assert "  transform: none" in text
    assert _run("run", str(target), "--quiet").exit_code == 0


def test_init_quotes_odd_column_names(tmp_path):
    data = tmp_path / "odd.csv"
    pd.DataFrame({"id": [1, 2, 3], "a: b": [1.0, 2.0, 4.0], "#c": [0.5, 0.1, 0.2],
                  "'d'": [3.0, 1.0, 2.0]}).to_csv(data, index=False)
    save_exported(Linear(torch.tensor([1.0, 2.0, 3.0]), n_features=3), tmp_path / "m.pt2",
                  n_features=3, dtype=torch.float64)
    result = _run("init", str(tmp_path / "m.pt2"), str(data), "--config",
                  str(tmp_path / "odd.yaml"))
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "odd.yaml")
    assert config.data.features == ("a: b", "#c", "'d'") and config.data.id == "id"


# --- report section and overrides -------------------------------------------------------------


def test_report_section_is_optional(tmp_path):
    config = parse_config({"data": {"path": "d.csv"}}, source=tmp_path / "v1.yaml",
                          base_dir=tmp_path)
    assert config.report.dir == tmp_path / "reports" / "v1"
    assert config.report.formats == ("csv", "markdown", "json")
    assert config.report.examples == "auto"


def test_run_out_data_and_format_override_the_config(tmp_path, assets, monkeypatch):
    config = write_config(tmp_path / "audit.yaml", assets, max_share=0.95,
                          report="report:\n  dir: configured\n  formats: [csv]\n")
    rows = pd.read_csv(assets / "eval.csv").head(20)
    rows.to_csv(tmp_path / "first20.csv", index=False)
    monkeypatch.chdir(tmp_path)
    result = _run("run", str(config), "--out", "elsewhere", "--data", "first20.csv",
                  "--format", "json,junit", "-f", "markdown", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("20 rows; reports in elsewhere\n")
    assert not (tmp_path / "configured").exists()
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()
                  if not p.name.startswith(".")) == ["junit.xml", "report.md", "summary.json"]


def test_an_unknown_format_flag_is_named(tmp_path, assets):
    config = write_config(tmp_path / "audit.yaml", assets)
    result = _run("run", str(config), "--format", "csv,junti")
    assert result.exit_code == 2
    assert result.stderr == ("Error: --format: unknown report format 'junti'; did you mean "
                             f"'junit'? (one of {', '.join(WRITERS)})\n")
