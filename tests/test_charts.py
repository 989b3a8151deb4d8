"""The charts draw the numbers of the CSV tables: bar lengths are sensitivity.csv's and
comparison.csv's shares (and intervals), the distribution chart's boxes are the sampled rows'
contributions (closed form for a linear scorer), a check's table gets a chart, and report.md
links the charts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from audit_setup import FEATURES, WEIGHTS, write_assets, write_config
from models import Linear, save_exported

from sensaudit import checks, load_config, run_audit, run_compare
from sensaudit.checks.base import Check, CheckResult, Ranking
from sensaudit.settings.sections import AuditSettings

pytest.importorskip("matplotlib", reason="the charts extra (matplotlib) is not installed")

from matplotlib.image import imread  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from sensaudit.reports.chart_render import render  # noqa: E402
from sensaudit.reports.charts import (  # noqa: E402
    ChartPlan,
    _Names,
    audit_plans,
    comparison_plans,
)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return write_assets(tmp_path_factory.mktemp("chart_assets"))


def _bars(plan: ChartPlan) -> list[Rectangle]:
    axes = render(plan).axes[0]
    return [p for p in axes.patches if isinstance(p, Rectangle)]


def test_share_bars_are_sensitivity_csv(tmp_path, assets):
    config = write_config(tmp_path / "audit.yaml", assets,
                          report="report:\n  dir: out\n  formats: [csv, png, markdown]\n")
    result, written = run_audit(load_config(config))
    csv = pd.read_csv(tmp_path / "out" / "sensitivity.csv").sort_values("rank")
    shares = next(p for p in audit_plans(result) if p.kind == "shares")
    bars = _bars(shares)
    assert [b.get_width() for b in bars] == pytest.approx(csv["share"].tolist(), rel=1e-7)
    # Flagged red, the other declared proxy orange, the rest blue.
    colors = {f: b.get_facecolor()[:3] for f, b in zip(csv["feature"], bars, strict=True)}
    assert colors["length"] == pytest.approx((0xC6 / 255, 0x28 / 255, 0x28 / 255))
    assert colors["noise"] == pytest.approx((0xEF / 255, 0x8F / 255, 0x00 / 255))
    assert {p.name for p in written} >= {"chart-shares.png", "chart-contributions.png"}
    image = imread(tmp_path / "out" / "chart-shares.png")
    assert image.shape[1] == 750 and image.std() > 0.05  # drawn, not blank
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "![Feature shares of the score's sensitivity](chart-shares.png)" in report
    assert "](chart-contributions.png)" in report


def test_contribution_boxes_are_the_rows_contributions(tmp_path, assets):
    """y = w.x: every row's contribution of feature j is w_j x std_j, so the whole box, its
    whiskers, mean and median sit at that value."""
    config = write_config(tmp_path / "audit.yaml", assets,
                          report="report:\n  dir: out\n  formats: [csv]\n")
    result, _ = run_audit(load_config(config))
    data = pd.read_csv(assets / "eval.csv")
    spread = next(p for p in audit_plans(result) if p.kind == "distribution").data
    expected = {f: w * data[f].std(ddof=1) for f, w in zip(FEATURES, WEIGHTS, strict=True)}
    assert spread["feature"].tolist() == pd.read_csv(
        tmp_path / "out" / "sensitivity.csv").sort_values("rank")["feature"].tolist()
    for row in spread.itertuples():
        for column in ("whisker_low", "q1", "median", "mean", "q3", "whisker_high"):
            assert getattr(row, column) == pytest.approx(expected[row.feature], rel=1e-6)
        assert row.rows == len(data)
    # examples.csv's per-row contributions are measured from the baseline (the mean):
    # w_j x (x_j - mean_j) for y = w.x.
    examples = pd.read_csv(tmp_path / "out" / "examples.csv")
    first = examples.loc[0]
    weight = dict(zip(FEATURES, WEIGHTS, strict=True))[first["driver_1"]]
    assert first["contribution_1"] == pytest.approx(
        weight * (first["value_1"] - data[first["driver_1"]].mean()), rel=1e-6)


def test_compare_bars_and_intervals_are_comparison_csv(tmp_path, assets):
    config = write_config(tmp_path / "audit.yaml", assets, max_share=0.95,
                          extra="compare:\n  bootstrap_samples: 50\n",
                          report="report:\n  dir: out\n  formats: [csv, png, markdown]\n")
    save_exported(Linear(torch.tensor([WEIGHTS[0] / 4, *WEIGHTS[1:]]), n_features=3),
                  tmp_path / "old.pt2", n_features=3, dtype=torch.float64)
    result, written = run_compare(load_config(config), tmp_path / "old.pt2",
                                  assets / "scorer.pt2")
    csv = pd.read_csv(tmp_path / "out" / "comparison.csv")
    plan = comparison_plans(result)[0]
    figure = render(plan)
    bars = [p for p in figure.axes[0].patches if isinstance(p, Rectangle)]
    assert [b.get_width() for b in bars] == pytest.approx(
        csv["share_old"].tolist() + csv["share_new"].tolist(), rel=1e-7)
    # Each error bar spans the bootstrap interval of comparison.csv.
    segments = [seg for collection in figure.axes[0].collections
                for seg in collection.get_segments()]
    spans = sorted((float(s[0][0]), float(s[1][0])) for s in segments)
    expected = sorted(zip(csv["share_old_low"].tolist() + csv["share_new_low"].tolist(),
                          csv["share_old_high"].tolist() + csv["share_new_high"].tolist(),
                          strict=True))
    assert len(spans) == len(expected) == 6
    for (low, high), (want_low, want_high) in zip(spans, expected, strict=True):
        assert (low, high) == pytest.approx((want_low, want_high), rel=1e-7)
    assert "chart-compare-shares.png" in {p.name for p in written}
    assert "](chart-compare-shares.png)" in (tmp_path / "out" / "comparison.md").read_text()


class _TableCheck(Check):
    """Produces a table: each feature's share times 100, a stand-in for a check's figures."""

    name = "table_check"

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> _TableCheck:
        return cls()

    def finish(self, ranking: Ranking) -> CheckResult:
        table = pd.DataFrame({"feature": ranking.table["feature"],
                              "points": ranking.table["share"] * 100})
        return CheckResult(self.name, tables={"points.csv": table})


def test_a_checks_table_gets_a_chart(tmp_path, assets, monkeypatch):
    monkeypatch.setattr(checks, "CHECKS", [*checks.CHECKS, _TableCheck])
    config = write_config(tmp_path / "audit.yaml", assets,
                          report="report:\n  dir: out\n  formats: [png, markdown]\n")
    result, written = run_audit(load_config(config))
    plan = next(p for p in audit_plans(result) if p.kind == "table" and "table_check" in p.name)
    assert plan.name == "chart-table_check-points.png"
    assert [b.get_width() for b in _bars(plan)] == pytest.approx(
        (result.table["share"] * 100).tolist())
    assert plan.name in {p.name for p in written}
    assert f"]({plan.name})" in (tmp_path / "out" / "report.md").read_text()


def test_without_png_report_md_links_no_chart(tmp_path, assets):
    config = write_config(tmp_path / "audit.yaml", assets,
                          report="report:\n  dir: out\n  formats: [markdown]\n")
    run_audit(load_config(config))
    assert "chart-" not in (tmp_path / "out" / "report.md").read_text()


def test_names_are_drawn_as_text_and_files_named_safely():
    data = pd.DataFrame({"feature": ["cost_$x$", "a" * 80], "share": [0.7, 0.3], "rank": [1, 2],
                         "flagged": [False, False], "proxy": [False, False]})
    figure = render(ChartPlan(name="x.png", title="t $", kind="shares", data=data))
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels[0] == "cost_$x$" and labels[1].endswith("…") and len(labels[1]) == 38
    figure.canvas.draw()  # no mathtext parse error
    names = _Names()
    assert [names.take("chart-shares", o) for o in ("a/b", "a b", "../x")] == [
        "chart-shares-a-b.png", "chart-shares-a-b-2.png", "chart-shares-x.png"]
