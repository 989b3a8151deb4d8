"""What CI systems read: junit.xml (a failed gate is a failed test case), the GitHub job summary
and annotations, --quiet naming each failed gate, and logs that are never wrapped."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
import torch
from audit_setup import FEATURES, WEIGHTS, expected_shares, write_assets, write_config
from models import Linear, save_exported
from typer.testing import CliRunner

from sensaudit import load_config, run_audit
from sensaudit.cli.app import app
from sensaudit.cli.github_actions import command

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return write_assets(tmp_path_factory.mktemp("ci_assets"))


def _run(*args: str, env: dict[str, str] | None = None):
    return CliRunner(env={"COLUMNS": "1000", **(env or {})}).invoke(app, list(args))


def _cases(path: Path) -> dict[tuple[str, str], ET.Element]:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return {(c.get("classname", ""), c.get("name", "")): c for c in suite.iter("testcase")}


# --- junit.xml --------------------------------------------------------------------------------


def test_junit_has_a_test_case_per_gate_and_a_failed_gate_fails_its_case(tmp_path, assets):
    config = write_config(tmp_path / "audit.yaml", assets,
                          report="report:\n  dir: out\n  formats: [junit, csv]\n")
    result, _ = run_audit(load_config(config))
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    suite = root.find("testsuite")
    assert root.tag == "testsuites" and suite is not None
    cases = _cases(tmp_path / "out" / "junit.xml")
    # Every gate of every check, passed and failed, plus the non-finite rows' case.
    assert len(result.gates.all) == 2
    assert set(cases) == {("sensaudit.proxy_limits", "length"),
                          ("sensaudit.proxy_limits", "noise"),
                          ("sensaudit.nonfinite", "scores and gradients are finite")}
    failure = cases[("sensaudit.proxy_limits", "length")].find("failure")
    assert failure is not None
    share = expected_shares(pd.read_csv(assets / "eval.csv"))["length"]
    assert failure.get("message") == (f"length: share {share:.1%}, rank 1; limit share <= 15% "
                                      "(proxy_limits)")
    # The failure carries the finding, as report.md words it.
    assert failure.text is not None
    assert failure.text.startswith(f"length is a declared proxy and drives {share:.1%}")
    assert failure.text == next(f for f in result.findings if "**length**" in f).replace("**", "")
    assert cases[("sensaudit.proxy_limits", "noise")].find("failure") is None
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    assert (root.get("tests"), root.get("failures")) == ("3", "1")


def test_junit_of_a_passing_audit_has_no_failure(tmp_path, assets):
    config = write_config(tmp_path / "audit.yaml", assets, max_share=0.95,
                          report="report:\n  dir: out\n  formats: [junit]\n")
    result, written = run_audit(load_config(config))
    assert result.passed and [p.name for p in written] == ["junit.xml"]
    cases = _cases(tmp_path / "out" / "junit.xml")
    assert len(cases) == 3 and all(c.find("failure") is None for c in cases.values())


def test_junit_names_control_characters_as_escapes(tmp_path):
    from sensaudit.reports.junit_report import _Case, junit_xml

    text = junit_xml("s", [_Case("sensaudit.x", "a\x1eb", failure="bad\x00", details="d")],
                     {}, [])
    case = ET.fromstring(text).find("testsuite/testcase")
    assert case is not None and case.get("name") == "a\\x1eb"


def test_compare_junit_has_a_case_per_declared_proxy_growth(tmp_path, assets):
    config = write_config(tmp_path / "audit.yaml", assets, max_share=0.95,
                          extra="compare:\n  bootstrap_samples: 0\n"
                                "  max_proxy_share_increase: 0.0\n",
                          report="report:\n  dir: out\n  formats: [junit]\n")
    # Old: the same scorer with length's weight at a third (its share grows in the new one).
    save_exported(Linear(torch.tensor([WEIGHTS[0] / 3, *WEIGHTS[1:]]), n_features=3),
                  tmp_path / "old.pt2", n_features=3, dtype=torch.float64)
    result = _run("compare", str(tmp_path / "old.pt2"), str(assets / "scorer.pt2"),
                  "--config", str(config), "--quiet")
    assert result.exit_code == 1, result.output
    cases = _cases(tmp_path / "out" / "comparison-junit.xml")
    grown = cases[("sensaudit.compare.max_proxy_share_increase", "length")].find("failure")
    assert grown is not None and "length: share grew by" in (grown.get("message") or "")
    # noise's weight did not change, so its share fell as length's rose: no failure.
    assert cases[("sensaudit.compare.max_proxy_share_increase", "noise")].find("failure") is None
    assert ("sensaudit.proxy_limits", "length") in cases
    assert result.stdout.splitlines()[0].startswith("FAILED length: share grew by")
    # A change of a share is in points, in every place it is said (issue 20, 5).
    first = result.stdout.splitlines()[0]
    assert first.endswith(" points; limit an increase of at most 0.0 points "
                          "(compare.max_proxy_share_increase)") and "%" not in first
    assert "%" not in (grown.get("message") or "")


# --- GitHub Actions ---------------------------------------------------------------------------


def test_step_summary_gets_the_markdown_report_appended(tmp_path, assets):
    config = write_config(tmp_path / "audit.yaml", assets,
                          report="report:\n  dir: out\n  formats: [markdown]\n")
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n", encoding="utf-8")
    result = _run("run", str(config), "--quiet", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 1, result.output
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert summary.read_text(encoding="utf-8") == "# earlier step\n" + report
    assert report.startswith("# sensaudit: FAILED")
    # Outside GitHub Actions no workflow command is printed.
    assert "::error" not in result.stdout


def test_compare_appends_its_report_to_the_step_summary(tmp_path, assets):
    config = write_config(tmp_path / "audit.yaml", assets, max_share=0.95,
                          extra="compare:\n  bootstrap_samples: 0\n",
                          report="report:\n  dir: out\n  formats: [markdown]\n")
    summary = tmp_path / "summary.md"
    model = str(assets / "scorer.pt2")
    result = _run("compare", model, model, "--config", str(config), "--quiet",
                  env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 0, result.output
    assert summary.read_text(encoding="utf-8") == (tmp_path / "out" / "comparison.md").read_text(
        encoding="utf-8")


def test_a_bad_config_is_summarised_and_annotated(tmp_path, assets):
    config = tmp_path / "audit.yaml"
    config.write_text("model:\n  path: m.pt2\n", encoding="utf-8")
    summary = tmp_path / "summary.md"
    result = _run("run", str(config), env={"GITHUB_STEP_SUMMARY": str(summary),
                                           "GITHUB_ACTIONS": "true"})
    message = f"{config}: missing required key 'data'"
    assert result.exit_code == 2
    assert result.stderr == f"Error: {message}\n"
    assert result.stdout == command("error", "sensaudit: bad input", message) + "\n"
    assert summary.read_text(encoding="utf-8") == f"# sensaudit: ERROR\n\n{message}\n"


def test_failed_gates_and_warnings_become_workflow_commands(tmp_path, assets):
    # length is not declared here, and holds ~40% of the sensitivity: over a 30% warning.
    config = tmp_path / "audit.yaml"
    config.write_text(f"model:\n  path: {assets / 'scorer.pt2'}\n"
                      f"data:\n  path: {assets / 'eval.csv'}\n  id: ad_id\n  label: quality\n"
                      "audit:\n  dominance_warning: 0.3\n  proxies:\n"
                      "    - feature: noise\n      max_share: 0.05\n"
                      "report:\n  dir: out\n  formats: [json]\n", encoding="utf-8")
    result = _run("run", str(config), "--quiet", env={"GITHUB_ACTIONS": "true"})
    assert result.exit_code == 1, result.output
    shares = expected_shares(pd.read_csv(assets / "eval.csv"))
    ranks = {f: i + 1 for i, f in enumerate(sorted(FEATURES, key=lambda f: -shares[f]))}
    lines = result.stdout.splitlines()
    error = next(line for line in lines if line.startswith("::error "))
    gate = (f"noise: share {shares['noise']:.1%}, rank {ranks['noise']}; limit share <= 5% "
            "(proxy_limits)")
    # The gate in one line, then its finding.
    assert error.startswith(command("error", "sensaudit: proxy_limits failed for noise",
                                    gate + "\nnoise is a declared proxy", config))
    warning = next(line for line in lines if line.startswith("::warning "))
    assert warning == command("warning", "sensaudit: dominance warning for length",
                              f"length: share {shares['length']:.1%}; over 30.0% (dominance)",
                              config)
    # --quiet: each failed gate and warning on one line, then the verdict.
    assert lines[0] == (f"FAILED noise: share {shares['noise']:.1%}, rank {ranks['noise']}; "
                        "limit share <= 5% (proxy_limits)")
    assert lines[1] == f"WARNING length: share {shares['length']:.1%}; over 30.0% (dominance)"
    assert lines[-1].startswith("Audit FAILED: 1 flag(s), 1 warning(s)")


def test_workflow_commands_escape_what_would_end_them():
    line = command("error", "a: b, c", "50% done\nnext line\r", Path("x,y.yaml"))
    assert line == "::error file=x%2Cy.yaml,title=a%3A b%2C c::50%25 done%0Anext line%0D"


def test_quiet_names_every_failed_gate_on_one_line_each(tmp_path, assets):
    config = write_config(tmp_path / "audit.yaml", assets,
                          report="report:\n  dir: out\n  formats: [json]\n")
    result = _run("run", str(config), "--quiet")
    assert result.exit_code == 1
    shares = expected_shares(pd.read_csv(assets / "eval.csv"))
    assert result.stdout.splitlines() == [
        f"FAILED length: share {shares['length']:.1%}, rank 1; limit share <= 15% "
        "(proxy_limits)",
        f"Audit FAILED: 1 flag(s), 0 warning(s), 60 rows; reports in {tmp_path / 'out'}"]


@pytest.mark.slow
def test_nothing_is_wrapped_off_a_terminal(tmp_path, assets):
    """A CI log is no terminal and sets no COLUMNS: rich would wrap at 80 columns and split
    the report path and long feature names."""
    deep = tmp_path / ("a-report-folder-with-a-long-name-" * 3) / "and-deeper"
    config = write_config(tmp_path / "audit.yaml", assets,
                          report=f"report:\n  dir: {deep}\n  formats: [json]\n")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "sensaudit", "run", str(config)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1].endswith(f"reports in {deep}") and len(lines[-1]) > 120
    finding = next(line for line in lines if line.startswith("- length is a declared proxy"))
    assert finding.endswith("then run this audit again.")  # the whole finding on one line
