"""What an audit outputs: report.examples (all, top, none, a row limit), Parquet beside CSV,
model.transform on closed forms, the torch floor, and formats whose extra is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from audit_setup import ROWS, write_assets, write_config
from models import MultiOutput
from typer.testing import CliRunner

from sensaudit import ConfigError, ModelConfig, load_config, run_audit
from sensaudit.cli.app import app
from sensaudit.core.jacobian import scores_and_jacobian
from sensaudit.core.torch_support import MIN_TORCH, parse_version, unsupported_reason
from sensaudit.inputs.models import LoadedModel
from sensaudit.pipeline.model_ready import prepare_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return write_assets(tmp_path_factory.mktemp("output_assets"))


def _audit(tmp_path: Path, assets: Path, report: str):
    config = write_config(tmp_path / "audit.yaml", assets, max_share=0.95,
                          extra="  examples_in_report: 4\n", report=report)
    return run_audit(load_config(config))


# --- report.examples --------------------------------------------------------------------------


def test_examples_all_streams_every_row(tmp_path, assets):
    _audit(tmp_path, assets, "report:\n  dir: out\n  formats: [csv]\n")
    examples = pd.read_csv(tmp_path / "out" / "examples.csv")
    assert len(examples) == ROWS and examples["id"].tolist()[:2] == ["ad000", "ad001"]


def test_examples_top_keeps_the_rows_the_report_lists(tmp_path, assets):
    result, _ = _audit(tmp_path, assets,
                       "report:\n  dir: out\n  formats: [csv]\n  examples: top\n")
    examples = pd.read_csv(tmp_path / "out" / "examples.csv")
    assert examples["id"].tolist() == [e.id for e in result.examples]
    assert len(examples) == len(result.examples) > 0  # each section's rows, once each
    first = result.examples[0]
    assert examples.loc[0, "driver_1"] == first.drivers[0].feature
    assert examples.loc[0, "contribution_1"] == pytest.approx(first.drivers[0].contribution,
                                                              rel=1e-7)
    assert "label" in examples.columns


def test_examples_none_writes_sensitivity_alone(tmp_path, assets):
    _, written = _audit(tmp_path, assets,
                        "report:\n  dir: out\n  formats: [csv, parquet]\n  examples: none\n")
    assert sorted(p.name for p in written) == ["sensitivity.csv", "sensitivity.parquet",
                                               "suspects.csv"]  # a check's own table


def test_examples_row_limit_keeps_the_first_rows(tmp_path, assets):
    _audit(tmp_path, assets, "report:\n  dir: out\n  formats: [csv]\n  examples: 7\n")
    examples = pd.read_csv(tmp_path / "out" / "examples.csv")
    assert examples["id"].tolist() == [f"ad{i:03d}" for i in range(7)]


@pytest.mark.parametrize("value", ["some", 0, -3, 1.5, True])
def test_bad_examples_setting_is_named(tmp_path, assets, value):
    config = write_config(tmp_path / "audit.yaml", assets,
                          report=f"report:\n  examples: {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value).startswith(
        f"{config}: report.examples must be auto, all, top, none or a row limit (an integer "
        ">= 1) (got ")


def test_parquet_holds_the_csv_tables(tmp_path, assets):
    _audit(tmp_path, assets, "report:\n  dir: out\n  formats: [csv, parquet]\n")
    out = tmp_path / "out"
    for name in ("examples", "sensitivity"):
        from_csv = pd.read_csv(out / f"{name}.csv")
        from_parquet = pq.read_table(out / f"{name}.parquet").to_pandas()
        assert list(from_parquet.columns) == list(from_csv.columns)
        pd.testing.assert_frame_equal(from_parquet, from_csv, check_dtype=False, rtol=1e-7)


# --- model.transform --------------------------------------------------------------------------


def _prepared(transform: str, output: int | None = None):
    model = MultiOutput(n_features=4, n_outputs=3)
    loaded = LoadedModel(module=model, path=Path("m.pt"), format="in-memory",
                         device=torch.device("cpu"), dtype=torch.float64)
    x = torch.randn(16, 4, dtype=torch.float64)
    prepared = prepare_model(loaded, x, ModelConfig(path=Path("m.pt"), transform=transform,
                                                    output=output), "audit.yaml")
    return model, x, prepared


def test_softmax_gradients_match_the_closed_form():
    """p = softmax(W x)  ->  dp_k/dx = p_k (W_k - sum_j p_j W_j)."""
    model, x, prepared = _prepared("softmax")
    scores, jac = scores_and_jacobian(prepared.module, x)
    w = model.W.detach()
    p = torch.softmax(x @ w.T, dim=1)
    expected = p[:, :, None] * (w[None, :, :] - (p @ w)[:, None, :])
    torch.testing.assert_close(scores, p)
    torch.testing.assert_close(jac, expected)


def test_softmax_is_applied_before_the_output_is_selected():
    model, x, prepared = _prepared("softmax", output=1)
    scores, jac = scores_and_jacobian(prepared.module, x)
    w = model.W.detach()
    p = torch.softmax(x @ w.T, dim=1)
    torch.testing.assert_close(scores[:, 0], p[:, 1])  # the class probability, not 1
    torch.testing.assert_close(jac[:, 0], p[:, 1:2] * (w[1] - p @ w))
    assert prepared.outputs == ["output_1"]


def test_sigmoid_gradients_match_the_closed_form():
    """s = sigmoid(W x)  ->  ds_k/dx = s_k (1 - s_k) W_k."""
    model, x, prepared = _prepared("sigmoid")
    _, jac = scores_and_jacobian(prepared.module, x)
    w = model.W.detach()
    s = torch.sigmoid(x @ w.T)
    torch.testing.assert_close(jac, (s * (1 - s))[:, :, None] * w[None])


def test_softmax_of_a_single_output_is_refused(tmp_path, assets):
    config = write_config(tmp_path / "audit.yaml", assets,
                          extra="", report="").read_text().replace(
        "model:\n", "model:\n  transform: softmax\n")
    (tmp_path / "soft.yaml").write_text(config)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "soft.yaml")])
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {tmp_path / 'soft.yaml'}: model.transform 'softmax' needs "
                             "a model with 2 or more outputs (this one returns 1): the softmax "
                             "of a single logit is always 1; use 'sigmoid' for a single logit\n")


def test_an_unknown_transform_is_named(tmp_path, assets):
    text = write_config(tmp_path / "audit.yaml", assets).read_text().replace(
        "model:\n", "model:\n  transform: logistic\n")
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"model.transform must be one of none, sigmoid, "
                                          r"softmax \(got 'logistic', a str\)"):
        load_config(tmp_path / "t.yaml")


# --- the torch floor --------------------------------------------------------------------------


@pytest.mark.parametrize("version, supported", [
    ("2.13.0+cpu", True), ("2.8.0", True), ("2.10.1", True), ("3.0.0a0", True),
    ("2.7.1+cu126", False), ("2.6.0", False), ("1.13.1", False)])
def test_torch_versions_are_compared_as_numbers(version, supported):
    assert (unsupported_reason(version) is None) == supported
    assert parse_version(version) >= MIN_TORCH or not supported


@pytest.mark.slow
def test_an_old_torch_is_refused_with_one_line(tmp_path, assets):
    config = write_config(tmp_path / "audit.yaml", assets)
    code = ("import sys, torch; torch.__version__ = '2.7.1+cpu'; "
            "from sensaudit.cli.app import app; "
            f"app(['run', {str(config)!r}], prog_name='sensaudit')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300,
                          env={"PATH": "", "PYTHONPATH": str(ROOT), "COLUMNS": "1000"})
    assert proc.returncode == 2
    assert proc.stderr == ("Error: sensaudit needs torch 2.8 or newer, found torch 2.7.1+cpu: the "
                           ".pt2 safety checks read the archive layout torch.export.save writes "
                           "from 2.8 on. Upgrade it: pip install 'torch>=2.8'\n")
    assert not (tmp_path / "reports").exists()


# --- optional formats -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["config", "flag"])
def test_charts_without_matplotlib_exit_2_with_the_install_command(tmp_path, assets,
                                                                   monkeypatch, how):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    formats = "  formats: [csv, html]\n" if how == "config" else ""
    config = write_config(tmp_path / "audit.yaml", assets,
                          report=f"report:\n  dir: out\n{formats}")
    args = ["run", str(config)] + ([] if how == "config" else ["--format", "csv,png"])
    result = CliRunner().invoke(app, args)
    where = f"{config}: report.formats" if how == "config" else "--format"
    name = "html" if how == "config" else "png"
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {where}: '{name}' needs matplotlib, which is not "
                             "installed; install it with: pip install 'sensaudit[charts]'\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "compare"])
def test_format_flag_replaces_the_configs_formats_completely(tmp_path, assets, monkeypatch,
                                                             command):
    """The config lists png and html; --format csv writes CSV only, so matplotlib is not
    needed (issue 20, defect 8: it used to be demanded because the config lists png)."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    config = write_config(tmp_path / "audit.yaml", assets,
                          report="report:\n  dir: out\n  formats: [csv, png, html]\n"
                                 "compare:\n  bootstrap_samples: 0\n")
    args = ([command, *[str(assets / "scorer.pt2")] * 2, "--config", str(config)]
            if command == "compare" else [command, str(config)])
    result = CliRunner().invoke(app, [*args, "--format", "csv"])
    assert result.exit_code in (0, 1), result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert written and all(name.endswith(".csv") for name in written), written
    assert ("comparison.csv" if command == "compare" else "sensitivity.csv") in written


def test_config_formats_are_still_checked_before_any_row_is_read(tmp_path, assets,
                                                                 monkeypatch):
    """Without --format, the config's png still needs matplotlib, named by its key, and the
    library's run_audit refuses it too (not only the CLI)."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    config = write_config(tmp_path / "audit.yaml", assets,
                          report="report:\n  dir: out\n  formats: [csv, png]\n")
    with pytest.raises(ConfigError, match=r"audit\.yaml: report\.formats: 'png' needs "
                                          "matplotlib"):
        run_audit(load_config(config))
    assert not (tmp_path / "out").exists()
