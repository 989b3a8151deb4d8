"""The "Extending" page's examples (docs/extending.md), run as written: each is one new file
plus one registration line, and the config, the pipeline and the reports pick it up."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_bad import cli_error
from typer.testing import CliRunner

import sensaudit
from sensaudit import checks, methods, reports
from sensaudit.cli.app import app
from sensaudit.config.keys import key_table

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"


def _example(path: str) -> types.ModuleType:
    """The page's block that starts with '# <path>', loaded as a module."""
    text = PAGE.read_text()
    block = re.search(r"```python\n# " + re.escape(path) + r"\n(.*?)```", text, flags=re.S)
    assert block, f"docs/extending.md has no example for {path}"
    module = types.ModuleType(path)
    # dont_inherit: run as the page writes it, without this file's `from __future__` imports.
    code = compile(block.group(1), path, "exec", dont_inherit=True)
    exec(code, module.__dict__)  # noqa: S102 - our docs
    return module


def _registration(registry: str) -> str:
    """The one registration line the page shows for a registry file."""
    text = PAGE.read_text()
    found = re.search(r"Register it in `sensaudit/" + re.escape(registry)
                      + r"` with one line in `\w+`:\n\n```python\n(.*?)\n```", text, flags=re.S)
    assert found, f"docs/extending.md shows no registration line for {registry}"
    return found.group(1).strip()


def _register_check(monkeypatch, cls) -> None:
    """Add the check to the registry for this test, in place of one of the same name (the
    page's own file, once a maintainer has added it)."""
    monkeypatch.setattr(checks, "CHECKS", [*(c for c in checks.CHECKS if c.name != cls.name),
                                           cls])


class _Linear(torch.nn.Module):
    """y = x @ w + 1, float64: its Jacobian is w in every row."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x):
        return x @ self.w + 1.0


def _export(model: torch.nn.Module, path: Path) -> None:
    rows = torch.export.Dim("rows", min=1)
    program = torch.export.export(model, (torch.zeros(4, 3, dtype=torch.float64),),
                                  dynamic_shapes=({0: rows},))
    torch.export.save(program, str(path))


def _frame(rows: int = 60) -> pd.DataFrame:
    generator = np.random.default_rng(3)
    return pd.DataFrame({"a": generator.normal(0, 1, rows), "b": generator.normal(5, 2, rows),
                         "c": generator.normal(-1, 0.5, rows)})


def test_a_method_is_one_file_and_one_registration_line(monkeypatch):
    module = _example("sensaudit/methods/finite_difference.py")
    cls = module.FiniteDifference
    assert _registration("methods/__init__.py") == "FiniteDifference.name: FiniteDifference,"
    monkeypatch.setitem(methods.METHODS, cls.name, cls)

    model = _Linear([2.0, -0.5, 0.25])
    settings = sensaudit.AuditSettings(method="finite_difference")
    by_difference = sensaudit.audit_frame(model, _frame(), settings=settings)
    by_gradient = sensaudit.audit_frame(model, _frame())
    assert by_difference.method == "finite_difference"
    # A linear model: central differences are exact up to rounding, so every figure matches.
    pd.testing.assert_frame_equal(by_difference.table, by_gradient.table, check_exact=False,
                                  rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        by_difference.table.set_index("feature").loc[["a", "b", "c"], "mean_gradient"],
        [2.0, -0.5, 0.25], rtol=1e-9)


def _config(tmp_path: Path, audit: str, report: str = "") -> Path:
    """A config auditing a linear model on _frame(), with these audit: (and report:) lines."""
    _frame().to_csv(tmp_path / "data.csv", index=False)
    _export(_Linear([0.1, 1.0, 0.1]), tmp_path / "model.pt2")
    path = tmp_path / "audit.yaml"
    path.write_text("model:\n  path: model.pt2\ndata:\n  path: data.csv\n"
                    f"audit:\n{audit}report:\n  dir: out\n{report}")
    return path


def test_a_method_option_is_declared_once_and_the_config_reads_it(monkeypatch, tmp_path):
    cls = _example("sensaudit/methods/finite_difference.py").FiniteDifference
    monkeypatch.setitem(methods.METHODS, cls.name, cls)
    cfg = _config(tmp_path, "  method: finite_difference\n  relative_step: 0.0001\n")
    assert sensaudit.load_config(cfg).audit.method_options == {"relative_step": 1e-4}
    done = CliRunner().invoke(app, ["run", str(cfg), "--quiet"])
    assert done.exit_code == 0, done.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["method"]["name"] == "finite_difference"
    assert summary["method"]["parameters"] == {"relative_step": 1e-4}
    # In Python, through AuditSettings: the same option, the same limit.
    model = _Linear([2.0, -0.5, 0.25])
    settings = sensaudit.AuditSettings(method="finite_difference",
                                       method_options={"relative_step": 1e-5})
    result = sensaudit.audit_frame(model, _frame(), settings=settings)
    np.testing.assert_allclose(result.table.set_index("feature").loc[["a", "b", "c"],
                                                                    "mean_gradient"],
                               [2.0, -0.5, 0.25], rtol=1e-8)
    # The key table of the docs lists it, from the declaration.
    assert ("| `audit.relative_step` | number | 0.001 | a number in (0, 0.1] | "
            "finite_difference: each feature's step, relative to |value| (at least 1) |"
            ) in key_table()


@pytest.mark.parametrize("audit, expected", [
    ("  method: finite_difference\n  relative_stpe: 0.01\n",
     "unknown key 'relative_stpe' in audit; did you mean 'relative_step'?"),
    ("  method: finite_difference\n  relative_step: 1\n",
     "audit.relative_step must be a number in (0, 0.1] (got 1, an int)"),
    ("  relative_step: 0.01\n",
     "audit.relative_step is a setting of audit.method finite_difference, not of 'gradient'"),
])
def test_a_method_option_error_is_one_line_naming_the_file_and_key(monkeypatch, tmp_path,
                                                                   audit, expected):
    cls = _example("sensaudit/methods/finite_difference.py").FiniteDifference
    monkeypatch.setitem(methods.METHODS, cls.name, cls)
    cfg = _config(tmp_path, audit)
    assert cli_error("run", str(cfg)).startswith(f"{cfg}: {expected}")
    assert not (tmp_path / "out").exists()


def test_a_method_on_a_nonlinear_multi_output_model_matches_the_gradient(monkeypatch):
    cls = _example("sensaudit/methods/finite_difference.py").FiniteDifference
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 2)).double()
    x = torch.randn(40, 3, dtype=torch.float64)
    got = cls().attribute(model, x)
    expected = sensaudit.input_jacobian(model, x)
    torch.testing.assert_close(got.values, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got.scores, model(x).detach())


def test_a_check_is_one_file_and_one_registration_line(monkeypatch, tmp_path):
    cls = _example("sensaudit/checks/share_ceiling.py").ShareCeiling
    assert _registration("checks/__init__.py") == "ShareCeiling,"
    _register_check(monkeypatch, cls)

    frame = _frame()
    model = _Linear([0.1, 1.0, 0.1])  # b holds most of the share: 2 x 1.0 against ~0.1 + 0.05
    settings = sensaudit.AuditSettings(checks={"share_ceiling": {"max_share": 0.4}})
    result = sensaudit.audit_frame(model, frame, settings=settings)
    assert not result.passed
    assert [(g.check, g.subject, g.limit) for g in result.gates.flags] == [
        ("share_ceiling", "b", "share <= 40%")]
    assert result.table.set_index("feature").loc["b", "flagged"]
    assert any(f.startswith("**b** holds") for f in result.findings)
    # Not configured: not run.
    assert sensaudit.audit_frame(model, frame).passed

    # Through a config file and the CLI: the config accepts the registered name, the reports
    # show the gate.
    frame.to_csv(tmp_path / "data.csv", index=False)
    _export(model, tmp_path / "model.pt2")
    (tmp_path / "audit.yaml").write_text(
        "model:\n  path: model.pt2\ndata:\n  path: data.csv\n"
        "audit:\n  checks:\n    share_ceiling: {max_share: 0.4}\nreport:\n  dir: out\n")
    done = CliRunner().invoke(app, ["run", str(tmp_path / "audit.yaml"), "--quiet"])
    assert done.exit_code == 1, done.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(f["feature"], f["limit"]) for f in summary["flags"]] == [("b", "share <= 40%")]
    assert "**b** holds" in (tmp_path / "out" / "report.md").read_text()


def test_a_check_option_error_names_the_config_file(monkeypatch, tmp_path):
    cls = _example("sensaudit/checks/share_ceiling.py").ShareCeiling
    _register_check(monkeypatch, cls)
    settings = sensaudit.AuditSettings(checks={"share_ceiling": {"max_share": 2}})
    with pytest.raises(sensaudit.ConfigError) as err:
        sensaudit.audit_frame(_Linear([1.0, 1.0, 1.0]), _frame(), settings=settings)
    assert str(err.value) == ("<DataFrame>: audit.checks.share_ceiling.max_share must be a "
                              "number in (0, 1] (got 2, an int)")


@pytest.mark.parametrize("options, expected", [
    ("{max_shar: 0.4}", "unknown key 'max_shar' in audit.checks.share_ceiling; did you mean "
                        "'max_share'? (allowed: max_share)"),
    ("{max_share: 0}", "audit.checks.share_ceiling.max_share must be a number in (0, 1] "
                       "(got 0, an int)"),
    ("[0.4]", "audit.checks.share_ceiling must be a mapping (got [0.4], a list)"),
])
def test_a_check_option_error_in_a_config_is_one_line_naming_the_file_and_key(
        monkeypatch, tmp_path, options, expected):
    cls = _example("sensaudit/checks/share_ceiling.py").ShareCeiling
    _register_check(monkeypatch, cls)
    cfg = _config(tmp_path, f"  checks:\n    share_ceiling: {options}\n")
    assert cli_error("run", str(cfg)) == f"{cfg}: {expected}"
    assert not (tmp_path / "out").exists()


def test_a_check_option_is_in_the_key_table(monkeypatch):
    cls = _example("sensaudit/checks/share_ceiling.py").ShareCeiling
    _register_check(monkeypatch, cls)
    assert ("| `audit.checks.share_ceiling.max_share` | number | 0.5 | a number in (0, 1] | "
            "share_ceiling: the largest share of an output's sensitivity one feature may hold |"
            ) in key_table()


def test_a_report_format_is_one_file_and_one_registration_line(monkeypatch, tmp_path):
    cls = _example("sensaudit/reports/text_report.py").TextReport
    assert _registration("reports/__init__.py") == "TextReport.format: TextReport,"
    monkeypatch.setitem(reports.WRITERS, cls.format, cls)
    frame = _frame()
    frame.to_csv(tmp_path / "data.csv", index=False)
    model = _Linear([0.1, 1.0, 0.1])
    _export(model, tmp_path / "model.pt2")
    (tmp_path / "audit.yaml").write_text(
        "model:\n  path: model.pt2\ndata:\n  path: data.csv\n"
        "audit:\n  proxies:\n    - {feature: b, max_share: 0.5}\n"
        "report:\n  dir: out\n  formats: [csv, text]\n")
    result, written = sensaudit.run_audit(sensaudit.load_config(tmp_path / "audit.yaml"))
    assert sorted(p.name for p in written) == ["examples.csv", "ranking.txt", "sensitivity.csv",
                                               "suspects.csv"]
    text = (tmp_path / "out" / "ranking.txt").read_text().splitlines()
    assert text[0].startswith("FAILED: ")
    assert text[1].startswith("  1. b ") and text[1].endswith("FLAGGED")
    assert text[-1] == "- b: over share <= 50%"


def test_a_format_option_is_declared_once_and_the_config_reads_it(monkeypatch, tmp_path):
    cls = _example("sensaudit/reports/text_report.py").TextReport
    monkeypatch.setitem(reports.WRITERS, cls.format, cls)
    cfg = _config(tmp_path, "  top_k: 1\n", "  formats: [text]\n  text: {top: 2}\n")
    assert sensaudit.load_config(cfg).report.options == {"text": {"top": 2}}
    done = CliRunner().invoke(app, ["run", str(cfg), "--quiet"])
    assert done.exit_code == 0, done.output
    lines = (tmp_path / "out" / "ranking.txt").read_text().splitlines()
    assert [line.split(".")[0].strip() for line in lines[1:]] == ["1", "2"]  # the top 2 of 3
    assert lines[1].startswith("  1. b ")
    assert ("| `report.text.top` | integer | 10 | an integer >= 1 | text: features listed per "
            "output, the highest ranked |") in key_table()


@pytest.mark.parametrize("report, expected", [
    ("  formats: [text]\n  text: {topp: 2}\n",
     "unknown key 'topp' in report.text; did you mean 'top'? (allowed: top)"),
    ("  formats: [text]\n  text: {top: 0}\n",
     "report.text.top must be an integer >= 1 (got 0, an int)"),
    ("  formats: [csv]\n  text: {top: 2}\n",
     "report.text sets options of a format that report.formats does not ask for (formats: csv)"),
])
def test_a_format_option_error_is_one_line_naming_the_file_and_key(monkeypatch, tmp_path,
                                                                   report, expected):
    cls = _example("sensaudit/reports/text_report.py").TextReport
    monkeypatch.setitem(reports.WRITERS, cls.format, cls)
    cfg = _config(tmp_path, "  top_k: 1\n", report)
    assert cli_error("run", str(cfg)) == f"{cfg}: {expected}"
    assert not (tmp_path / "out").exists()
