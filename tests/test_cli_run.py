"""`sensaudit run`: exit codes 0/1/2, one-line errors on stderr, the reports it writes, and
reports left untouched by a failed run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from models import save_exported
from typer.testing import CliRunner

import sensaudit
from sensaudit.cli.app import app
from sensaudit.results.audit_result import SENSITIVITY_COLUMNS

ROWS = 40
FEATURES = ["copy_length", "clarity", "noise"]


class _LengthScorer(torch.nn.Module):
    """sigmoid(0.01 (copy_length - 300) + 0.5 clarity): copy_length drives ~80% of the
    sensitivity, clarity the rest, noise none."""

    def forward(self, x):
        w = torch.tensor([0.01, 0.5, 0.0], dtype=x.dtype)
        return torch.sigmoid((x - torch.tensor([300.0, 0.0, 0.0], dtype=x.dtype)) @ w)


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Path:
    """A torch.export scorer, a whole pickled copy, and a matching CSV extract."""
    folder = tmp_path_factory.mktemp("assets")
    save_exported(_LengthScorer(), folder / "scorer.pt2", n_features=3)
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 1)), folder / "whole.pt")
    rng = np.random.default_rng(1)
    pd.DataFrame({
        "ad_id": [f"ad{i:03d}" for i in range(ROWS)],
        "copy_length": rng.normal(300.0, 60.0, ROWS).round(3),
        "clarity": rng.uniform(0.0, 1.0, ROWS).round(4),
        "noise": rng.normal(0.0, 1.0, ROWS).round(4),
        "quality": rng.integers(0, 2, ROWS),
    }).to_csv(folder / "eval.csv", index=False)
    return folder


def _config(tmp_path: Path, assets: Path, *, max_share: float = 0.15, extra: str = "",
            formats: str = "", model: str = "scorer.pt2", data: str | None = None,
            name: str = "audit.yaml") -> Path:
    data_path = data or str(assets / "eval.csv")
    text = (f"model:\n  path: {assets / model}\n"
            f"data:\n  path: {data_path}\n  label: quality\n  id: ad_id\n"
            f"audit:\n  proxies:\n    - feature: copy_length\n      max_share: {max_share}\n"
            f"{extra}"
            f"report:\n  dir: reports\n{formats}")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _run(*args: str):
    # A wide terminal, so rich does not wrap the lines the tests compare.
    return CliRunner(env={"COLUMNS": "1000"}).invoke(app, list(args))


def _assert_bad_input(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr == f"Error: {message}\n"
    assert result.stdout == ""
    assert "Traceback" not in result.output


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- exit codes -------------------------------------------------------------------------------


def test_passing_audit_exits_0(tmp_path, assets):
    config = _config(tmp_path, assets, max_share=0.95)
    result = _run("run", str(config), "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"Audit PASSED: 0 flag(s), 0 warning(s), {ROWS} rows; reports in "
                             f"{tmp_path / 'reports'}\n")
    assert result.stderr == ""


def test_failed_gate_exits_1(tmp_path, assets):
    config = _config(tmp_path, assets, max_share=0.15)
    result = _run("run", str(config))
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == (f"Audit FAILED: 1 flag(s), 0 warning(s), {ROWS} rows; reports in "
                         f"{tmp_path / 'reports'}")
    assert any("copy_length is a declared proxy and drives" in line for line in lines)
    assert f"  wrote {tmp_path / 'reports' / 'summary.json'}" in lines


def test_bad_config_exits_2_with_one_line(tmp_path, assets):
    config = _config(tmp_path, assets, extra="  batch_size: '64'\n")
    _assert_bad_input(_run("run", str(config)),
                      f"{config}: audit.batch_size must be an integer >= 1 (got '64', a str)")
    assert not (tmp_path / "reports").exists()


def test_missing_config_exits_2(tmp_path):
    _assert_bad_input(_run("run", str(tmp_path / "nope.yaml")),
                      f"{tmp_path / 'nope.yaml'}: config file not found")


def test_bad_data_exits_2(tmp_path, assets):
    data = tmp_path / "bad.csv"
    text = (assets / "eval.csv").read_text().splitlines()
    cells = text[5].split(",")
    cells[2] = "very clear"
    text[5] = ",".join(cells)
    data.write_text("\n".join(text) + "\n")
    config = _config(tmp_path, assets, data=str(data))
    _assert_bad_input(_run("run", str(config), "--quiet"),
                      f"{data}: column 'clarity' has text in row 5 ('very clear'); expected "
                      "numbers")


def test_unknown_proxy_feature_exits_2(tmp_path, assets):
    config = _config(tmp_path, assets).read_text().replace("feature: copy_length",
                                                          "feature: copy_lenght")
    path = tmp_path / "typo.yaml"
    path.write_text(config)
    _assert_bad_input(_run("run", str(path), "--quiet"),
                      f"{path}: audit.proxies[0].feature 'copy_lenght' is not an audited "
                      "feature; did you mean 'copy_length'? (features: copy_length, clarity, "
                      "noise)")


def test_pickled_model_needs_trust_model_code(tmp_path, assets):
    config = _config(tmp_path, assets, model="whole.pt", max_share=1.0)
    result = _run("run", str(config), "--quiet")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {assets / 'whole.pt'}: refusing to unpickle: ")
    assert result.stderr.count("\n") == 1
    trusted = _run("run", str(config), "--quiet", "--trust-model-code")
    assert trusted.exit_code == 0, trusted.output
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["model"] == {"path": str(assets / "whole.pt"), "format": "pickle"}


def test_model_with_wrong_width_exits_2(tmp_path, assets):
    data = tmp_path / "wide.csv"
    frame = pd.read_csv(assets / "eval.csv")
    frame["extra"] = 1.0 + np.arange(ROWS)
    frame.to_csv(data, index=False)
    config = _config(tmp_path, assets, data=str(data))
    result = _run("run", str(config), "--quiet")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {assets / 'scorer.pt2'}: the model failed on a "
                                    "batch of 4 features (")
    assert result.stderr.endswith("); does its input width match the data's features?\n")
    assert "Traceback" not in result.output


def test_error_after_progress_started_is_one_line_on_stderr(tmp_path, assets):
    data = tmp_path / "no_rows.csv"
    data.write_text("ad_id,copy_length,clarity,noise,quality\n")
    config = _config(tmp_path, assets, data=str(data))
    result = _run("run", str(config))
    assert result.exit_code == 2
    assert result.stderr == f"Error: {data}: the data has a header but no rows\n"


def test_error_message_with_square_brackets_is_printed_verbatim(tmp_path):
    config = tmp_path / "[x]" / "nope.yaml"
    result = _run("run", str(config))
    assert result.exit_code == 2
    assert result.stderr == f"Error: {config}: config file not found\n"


# --- reports ----------------------------------------------------------------------------------


def test_reports_written(tmp_path, assets):
    config = _config(tmp_path, assets)
    result = _run("run", str(config), "--quiet")
    assert result.exit_code == 1
    reports = tmp_path / "reports"
    assert sorted(p.name for p in reports.iterdir()) == [
        ".sensaudit-manifest.json",  # sensaudit's own, hidden (its lock file is removed)
        "examples.csv", "report.md", "sensitivity.csv", "summary.json", "suspects.csv"]

    sensitivity = pd.read_csv(reports / "sensitivity.csv")
    assert list(sensitivity.columns) == [
        "output", "feature", "mean_gradient", "mean_abs_gradient", "rms_gradient", "std",
        "scaled_sensitivity", "share", "rank", "flagged"] == SENSITIVITY_COLUMNS
    assert sensitivity["feature"].tolist() == ["copy_length", "clarity", "noise"]
    assert sensitivity["rank"].tolist() == [1, 2, 3]
    assert sensitivity["flagged"].tolist() == [True, False, False]
    assert sensitivity.loc[2, "share"] == 0.0

    examples = pd.read_csv(reports / "examples.csv")
    assert list(examples.columns) == [
        "id", "output", "score", "label", "driver_1", "value_1", "gradient_1", "contribution_1",
        "driver_2", "value_2", "gradient_2", "contribution_2", "driver_3", "value_3",
        "gradient_3", "contribution_3"]
    assert examples["id"].tolist() == [f"ad{i:03d}" for i in range(ROWS)]
    assert set(examples["output"]) == {"score"}

    summary = json.loads((reports / "summary.json").read_text())
    assert {"passed", "flags", "rows", "model", "data"} <= set(summary)
    assert summary["passed"] is False
    assert summary["rows"] == ROWS
    assert summary["model"] == {"path": str(assets / "scorer.pt2"), "format": "torch.export"}
    assert summary["data"] == {"path": str(assets / "eval.csv")}
    assert [(f["feature"], f["max_share"], f["limit"]) for f in summary["flags"]] == [
        ("copy_length", 0.15, "share <= 15%")]
    assert summary["flags"][0]["share"] == pytest.approx(sensitivity.loc[0, "share"], rel=1e-7)

    report = (reports / "report.md").read_text()
    assert report.startswith("# sensaudit: FAILED\n")
    assert "## Findings" in report
    assert "- **copy_length** is a declared proxy and drives " in report
    assert "| 1 | copy_length |" in report


def test_reports_match_the_library_call(tmp_path, assets):
    config = _config(tmp_path, assets)
    assert _run("run", str(config), "--quiet").exit_code == 1
    result = sensaudit.audit(sensaudit.load_config(config))
    written = pd.read_csv(tmp_path / "reports" / "sensitivity.csv")
    pd.testing.assert_frame_equal(written, result.table, check_exact=False, rtol=1e-7,
                                  check_dtype=False)


def test_json_only_writes_only_the_summary(tmp_path, assets):
    config = _config(tmp_path, assets, formats="  formats: [json]\n")
    assert _run("run", str(config), "--quiet").exit_code == 1
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        ".sensaudit-manifest.json", "summary.json"]


def test_failed_run_leaves_earlier_reports_untouched(tmp_path, assets):
    config = _config(tmp_path, assets)
    assert _run("run", str(config), "--quiet").exit_code == 1
    before = _snapshot(tmp_path / "reports")

    bad = tmp_path / "bad.csv"
    bad.write_text((assets / "eval.csv").read_text().replace("\nad039,", "\nad039,nan-ish,", 1))
    failing = _config(tmp_path, assets, data=str(bad), name="failing.yaml")
    result = _run("run", str(failing), "--quiet")

    assert result.exit_code == 2, result.output
    assert _snapshot(tmp_path / "reports") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.yaml", "bad.csv", "failing.yaml", "reports"]  # no staging folder left behind


def test_failure_after_rows_were_streamed_leaves_reports_untouched(tmp_path, assets):
    # Text on the last row surfaces in the second pass, after examples.csv has been started.
    config = _config(tmp_path, assets, extra="  batch_size: 8\n")
    assert _run("run", str(config), "--quiet").exit_code == 1
    before = _snapshot(tmp_path / "reports")
    lines = (assets / "eval.csv").read_text().splitlines()
    lines[-1] = lines[-1].rsplit(",", 1)[0] + ",1"  # still valid: only the label changes
    frame = pd.read_csv(assets / "eval.csv")
    frame.loc[ROWS - 1, "noise"] = np.nan
    bad = tmp_path / "late.csv"
    frame.to_csv(bad, index=False)
    failing = _config(tmp_path, assets, data=str(bad), name="failing.yaml")
    result = _run("run", str(failing), "--quiet")
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {bad}: column 'noise' has 1 missing or infinite value "
                             f"(first at row {ROWS}); fix the data or set data.on_missing: drop "
                             "to skip such rows\n")
    assert _snapshot(tmp_path / "reports") == before


# --- help and version -------------------------------------------------------------------------


def test_version():
    result = _run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"sensaudit {sensaudit.__version__}\n"


def test_run_help_shows_an_example():
    result = _run("run", "--help")
    assert result.exit_code == 0
    # A pip user has no checkout: the example and the argument's help name no configs/.
    assert "sensaudit run sensaudit.yaml" in result.stdout
    assert "configs/" not in result.stdout
    assert "--trust-model-code" in result.stdout


@pytest.mark.parametrize("command", ["run", "compare"])
def test_removed_trust_pickle_flag_is_a_usage_error(command):
    # --trust-pickle was the old name of --trust-model-code; it is gone, not silently ignored.
    result = _run(command, "--trust-pickle", "--help")
    assert result.exit_code == 2
    assert "No such option: --trust-pickle" in result.stderr


@pytest.mark.slow
def test_python_dash_m_reports_errors_without_traceback(tmp_path):
    env = {**os.environ, "COLUMNS": "1000",
           "PYTHONPATH": os.pathsep.join([str(Path(sensaudit.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    config = tmp_path / "audit.yaml"
    config.write_text("model:\n  path: m.pt2\n")
    proc = subprocess.run([sys.executable, "-m", "sensaudit", "run", str(config)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == f"Error: {config}: missing required key 'data'\n"
    assert proc.stdout == ""
