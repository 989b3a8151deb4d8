"""Names from the data cannot forge sensaudit's output: a real audit and compare through the CLI,
on a model whose features, outputs and ids are named to attack each medium (a forged
``::error`` in a CI log, a ``# sensaudit: PASSED`` heading, raw HTML, terminal escape
sequences, spreadsheet formulas, table pipes, a bidi override)."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from models import MultiOutput, save_exported
from typer.testing import CliRunner

from sensaudit.cli.app import app

FEATURES = [
    "plain_name",  # an ordinary name, which must come out exactly as it is
    "x\n::error::pwned",
    "y%0A::error::pwned",
    "z\r\n# sensaudit: PASSED",
    "<script>alert(1)</script>",
    "\x1b]0;title\x07",
    "\x1b[2J",
    "\x9b31mc1",
    '=HYPERLINK("http://evil.example","click")',
    "+1",
    "-cmd",
    "@SUM(A1)",
    "a|b|c",
    "\u202eevil",
    "[click](http://evil.example)",
    "[red]markup[/]",
]
OUTPUTS = ["out\n::warning::pwned", "<img src=x onerror=alert(1)>"]
IDS = ["=1+2", "-5", "@id", "\tt", "plain"]
PAYLOAD = re.compile(r"pwned|PASSED|<script|<img|\x1b|\x9b|\x07|\u202e")
ROWS = 40


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """model.pt2 (2 outputs), data.parquet with the hostile names, audit.yaml declaring every
    feature a proxy with a limit it fails, reports in every text format."""
    tmp = tmp_path_factory.mktemp("hostile")
    save_exported(MultiOutput(n_features=len(FEATURES), n_outputs=2), tmp / "model.pt2",
                  n_features=len(FEATURES))
    rng = np.random.default_rng(3)
    data = pd.DataFrame(rng.normal(size=(ROWS, len(FEATURES))).astype("float32"),
                        columns=FEATURES)
    data.insert(0, "id", [IDS[i % len(IDS)] + str(i) for i in range(ROWS)])
    data["label"] = rng.integers(0, 2, ROWS)
    data.to_parquet(tmp / "data.parquet", index=False)
    config = {
        "model": {"path": "model.pt2", "output_names": OUTPUTS},
        "data": {"path": "data.parquet", "id": "id", "label": "label"},
        "audit": {"proxies": [{"feature": f, "max_share": 0.01} for f in FEATURES]},
        "report": {"dir": "out", "formats": ["markdown", "csv", "json", "junit", "html"]},
    }
    (tmp / "audit.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return tmp


def _run(tmp: Path, *args: str):
    summary = tmp / f"summary-{args[0]}.md"
    summary.unlink(missing_ok=True)
    env = {"COLUMNS": "1000", "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    result = CliRunner(env=env).invoke(app, list(args))
    assert result.exit_code == 1, (result.output, result.exception)
    return result, summary.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def audited(hostile):
    return _run(hostile, "run", str(hostile / "audit.yaml"))


@pytest.fixture(scope="module")
def compared(hostile):
    model = str(hostile / "model.pt2")
    return _run(hostile, "compare", model, model, "--config", str(hostile / "audit.yaml"),
                "--out", str(hostile / "compare"))


def _assert_log_unforgeable(stdout: str) -> None:
    # Only sensaudit's own workflow commands start a line, and each is whole: the runner
    # would read any other line starting with "::" (or the older "##[") as a command.
    commands = [line for line in stdout.splitlines() if line.startswith(("::", "##["))]
    assert commands, stdout
    for line in commands:
        assert re.fullmatch(r"::(error|warning) file=[^:,]+,title=sensaudit%3A [^:]*::.+",
                            line), line
    # No escape sequence (ESC, CSI, OSC's BEL), no other control character, no bidi override.
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", stdout)


def test_the_log_shows_names_without_forged_commands_or_escape_sequences(audited):
    result, _ = audited
    _assert_log_unforgeable(result.stdout)
    assert r"x\n::error::pwned" in result.stdout  # shown, escaped, on its line
    assert r"\x1b[2J" in result.stdout and "[red]markup[/]" in result.stdout
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error ")]
    assert len(errors) >= len(FEATURES)  # every proxy failed its limit, one command each


def test_quiet_gate_lines_are_unforgeable(hostile):
    result, _ = _run(hostile, "run", str(hostile / "audit.yaml"), "--quiet")
    _assert_log_unforgeable(result.stdout)
    assert r"FAILED x\n::error::pwned (out\n::warning::pwned): share" in result.stdout


def test_compare_log_is_unforgeable_too(compared):
    result, _ = compared
    _assert_log_unforgeable(result.stdout)


def _headings(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if re.match(r" {0,3}#{1,6}(\s|$)", line)]


def _assert_markdown_unforgeable(markdown: str, first: str) -> None:
    headings = _headings(markdown)
    assert headings[0] == first
    # Code spans show their text as it is (names in headings are quoted in one).
    markdown = "\n".join(re.sub(r"(`+)[^`](?:.*?[^`])?\1", "`code`", line)
                         for line in markdown.splitlines())
    for heading in _headings(markdown)[1:]:  # sensaudit's own sections
        assert heading.startswith(("## ", "### ")) and not PAYLOAD.search(heading), heading
    # No raw HTML but sensaudit's own version footnote, no entity, no link, no image.
    assert re.findall(r"<[A-Za-z/!?][^>]*>?", markdown) == ["<sub>", "</sub>"]
    assert not re.search(r"&#|&[A-Za-z]+;(?<!&lt;)(?<!&gt;)(?<!&amp;)", markdown)
    assert not re.search(r"(?<!\\)\[[^\]]*(?<!\\)\]\(http", markdown)
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", markdown)
    for line in markdown.splitlines():
        assert not PAYLOAD.match(line.lstrip(" -*>|")), line
    # Table rows keep their header's cell count: no name closes a cell.
    for block in re.split(r"\n(?!\|)", markdown):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        cells = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(cells) <= 1, rows


def test_report_md_and_the_step_summary_have_only_sensaudits_headings(audited, hostile):
    _, summary = audited
    report = (hostile / "out" / "report.md").read_text(encoding="utf-8")
    assert summary == report
    _assert_markdown_unforgeable(report, "# sensaudit: FAILED")
    assert "| plain_name |" in report  # ordinary names are untouched
    assert r"a\|b\|c" in report and "&lt;script&gt;" in report


def test_comparison_md_has_only_sensaudits_headings(compared, hostile):
    _, summary = compared
    _assert_markdown_unforgeable(summary, "# sensaudit compare: FAILED")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _assert_no_formula(rows: list[dict[str, str]]) -> None:
    for row in rows:
        for key, value in row.items():
            for text in (key, value):
                assert not text.startswith(("=", "+", "@", "\t", "\r")), (key, value)
                if text.startswith("-"):
                    float(text)  # only a number may start with "-"


def test_csv_text_cells_are_escaped_and_numbers_stay_numbers(audited, hostile):
    sensitivity = _csv_rows(hostile / "out" / "sensitivity.csv")
    _assert_no_formula(sensitivity)
    features = {row["feature"] for row in sensitivity}
    assert {"plain_name", "'=HYPERLINK(\"http://evil.example\",\"click\")", "'+1", "'-cmd",
            "'@SUM(A1)", "x\n::error::pwned"} <= features
    gradients = [float(row["mean_gradient"]) for row in sensitivity]
    assert min(gradients) < 0  # a negative number, written as a number
    examples = _csv_rows(hostile / "out" / "examples.csv")
    assert examples
    _assert_no_formula(examples)
    assert {row["id"] for row in examples} & {"'=1+20", "'-51", "'@id2", "'\tt3"}
    assert min(float(row["contribution_1"]) for row in examples) < 0
    comparison = _csv_rows(hostile / "compare" / "comparison.csv")
    _assert_no_formula(comparison)
    assert "'-cmd" in {row["feature"] for row in comparison}


def test_json_keeps_names_exact_and_junit_stays_well_formed(audited, hostile):
    summary = json.loads((hostile / "out" / "summary.json").read_text(encoding="utf-8"))
    assert {"x\n::error::pwned", "\x1b[2J", "-cmd"} <= {f["feature"] for f in summary["flags"]}
    suite = ET.parse(hostile / "out" / "junit.xml").getroot()
    names = {case.get("name") for case in suite.iter("testcase")}
    assert r"\x1b[2J [<img src=x onerror=alert(1)>]" in names
    html = (hostile / "out" / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html and "<img src=x" not in html
