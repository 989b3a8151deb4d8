"""Issue 20 (5): one wording for every gate and finding, wherever it is shown (--quiet, the
GitHub annotations, junit.xml, report.md, report.html): plain sentences, one unit per
quantity (shares in %, changes of a share in points), no Python reprs, limits said as limits,
and no sentence that contradicts the verdict.

The audit: y = 1.0 a + 0.05 b on rows whose label is (b > 1): the model leans on a, which the
label does not support, so a is a suspected proxy (audit.fail_on_suspects fails it); a tight
robustness limit fails too."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET

import pytest
from helpers_checks import LinearScorer, frame, write_setup
from typer.testing import CliRunner

from sensaudit.cli.app import app
from sensaudit.results.gate_text import figures

# A decimal with no unit after it, where a share would be: "evidence high 0.1485".
BARE_FRACTION = re.compile(r"(?<![\d.])0\.\d+(?![\d.]*\s*(%|points))")
REPR = re.compile(r"\[['\"]|['\"]\]|', '|\", '")


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wording")
    data = frame(400, seed=11)
    config = write_setup(folder, LinearScorer([1.0, 0.05, 0.0]), data,
                         {"fail_on_suspects": True, "threshold": 0.5,
                          "robustness": {"epsilon": 0.1, "steps": 2, "bounds": "none",
                                         "max_shift": 0.01}},
                         data_extra={"label": "y"})
    data.assign(y=(data["b"] > 1).astype(float)).to_csv(folder / "data.csv", index=False)
    config.write_text(config.read_text() + "  formats: [json, junit, markdown, html]\n")
    run = CliRunner(env={"COLUMNS": "1000", "GITHUB_ACTIONS": "true"}).invoke(
        app, ["run", str(config), "--quiet"])
    assert run.exit_code == 1, run.output
    return run.stdout, folder / "out"


def _messages(stdout: str, out) -> dict[str, list[str]]:
    quiet = [line[len("FAILED "):] for line in stdout.splitlines() if line.startswith("FAILED ")]
    annotations = [line.split("::", 2)[2].replace("%25", "%").replace("%0A", "\n")
                   for line in stdout.splitlines() if line.startswith("::error ")]
    junit = [f.get("message", "") for f in ET.parse(out / "junit.xml").getroot().iter("failure")]
    return {"quiet": quiet, "annotations": annotations, "junit": junit}


def test_every_place_says_a_failed_gate_the_same_way_in_plain_words(failed):
    stdout, out = failed
    said = _messages(stdout, out)
    assert len(said["quiet"]) == len(said["junit"]) == 2  # the suspect and robustness
    # The annotation's first line is the --quiet line is the JUnit message.
    assert said["quiet"] == said["junit"] == [a.split("\n")[0] for a in said["annotations"]]
    page = html.unescape((out / "report.html").read_text(encoding="utf-8"))
    for line in said["quiet"]:
        assert not REPR.search(line), line
        assert "not a suspected proxy" not in line
        subject, rest = line.split(": ", 1)
        figures_said = rest.rsplit("; limit ", 1)[0]
        assert figures_said in page  # the HTML gates table says the same figures
    suspect = next(line for line in said["quiet"] if line.endswith("(suspects)"))
    assert suspect.startswith("a: relied on beyond its evidence: ")
    assert not BARE_FRACTION.search(suspect), suspect  # shares in %, share changes in points
    assert "; limit for a feature nobody declared: share below " in suspect
    robustness = next(line for line in said["quiet"] if line.endswith("(robustness)"))
    assert "largest shift" in robustness and "max shift" not in robustness
    assert "limit 95th-percentile shift <= 0.01 (robustness.max_shift)" in robustness


def test_a_failed_report_does_not_say_no_proxy_is_over_its_limit(failed):
    _, out = failed
    for name in ("report.md", "report.html"):
        text = (out / name).read_text(encoding="utf-8")
        assert "FAILED" in text
        assert "No declared proxy is over its limit" not in text
        assert "no proxy declared (audit.proxies)" in text


def test_the_limit_and_the_largest_shift_have_different_names(failed):
    _, out = failed
    report = (out / "report.md").read_text(encoding="utf-8")
    header = next(line for line in report.splitlines() if line.startswith("| output | attack"))
    assert "largest shift" in header and "max_shift |" not in header
    assert "limit on the 95th percentile (robustness.max_shift)" in header
    assert "over its limit of 0.01 (robustness.max_shift, a limit on the 95th percentile)" in (
        report)


def test_contribution_means_one_thing(failed):
    """examples: contribution = gradient x (value - baseline); the chart of per-row values
    (gradient x std) is called the scaled gradient, and says so."""
    _, out = failed
    page = html.unescape((out / "report.html").read_text(encoding="utf-8"))
    assert "Contribution: gradient x (value - baseline)" in page
    assert "Per-row scaled gradient of the top 3 features" in page
    assert "contribution to the score per row (gradient x std)" not in page
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "(contribution: gradient x (value - baseline)" in report


def test_figures_in_their_units():
    assert figures({"share": 0.39, "rank": 1, "max_share": 0.15}) == "share 39.0%, rank 1"
    assert figures({"evidence_share": 0.041, "evidence_high": 0.1486, "reliance_gap": 0.349,
                    "contrast": 0.0727, "dominant": False}) == (
        "label's support 4.1%, support at most 14.9%, share over its support +34.9 points, "
        "misscored minus rest +7.3 points")
    assert figures({"reasons": ["one: 39.0%", "two"], "share": 0.39}) == "one: 39.0%; two"
    assert figures({"mean_shift": 0.05, "p95_shift": 0.1, "max_shift": 0.104}) == (
        "mean shift 0.05, 95th-percentile shift 0.1, largest shift 0.104")
    from sensaudit.results.gate_text import quantity

    assert quantity(["x", "y"], "") == "x, y"
