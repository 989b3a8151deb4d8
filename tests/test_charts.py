"""The charts draw the numbers of the CSV tables: bar lengths are sensitivity.csv's and
comparison.csv's shares (and intervals), the distribution chart's boxes are the sampled rows'
contributions (closed form for a linear scorer), a check's table gets a chart, and report.md
links the charts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from audit_setup import FEATURES, WEIGHTS, write_assets, write_config
from helpers_checks import LinearScorer, frame
from models import Linear, save_exported
from torch import nn

from sensaudit import audit_frame, checks, load_config, run_audit, run_compare, write_reports
from sensaudit.checks.base import Check, CheckResult, Ranking
from sensaudit.settings.checks import FeatureGroup, LayerHealthSettings, LinearitySettings
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
    assert "![Share of the score's sensitivity per feature](chart-shares.png)" in report
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
    axes = figure.axes[0]
    bars = [p for p in axes.patches if isinstance(p, Rectangle)]
    # One bar per feature: its change in share points, not a fraction drawn as %.
    assert [b.get_width() for b in bars] == pytest.approx(
        (csv["delta_share"] * 100).tolist(), rel=1e-7)
    # Each error bar spans the change's interval of comparison.csv, in points.
    segments = [seg for collection in axes.collections for seg in collection.get_segments()]
    spans = sorted((float(s[0][0]), float(s[1][0])) for s in segments)
    expected = sorted(zip((csv["delta_share_low"] * 100).tolist(),
                          (csv["delta_share_high"] * 100).tolist(), strict=True))
    assert len(spans) == len(expected) == 3
    for (low, high), (want_low, want_high) in zip(spans, expected, strict=True):
        assert (low, high) == pytest.approx((want_low, want_high), rel=1e-7)
    assert "points" in axes.get_xlabel() and "%" not in axes.get_xlabel()
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


# --- issue 20 (4): one purpose-built chart per check, its limit drawn ----------------------------

CHECKS_EXTRA = ("  fail_on_suspects: false\n  threshold: 3.0\n"
                "  expect:\n    - {feature: clarity, direction: increasing, "
                "max_violation_rate: 0.02}\n"
                "  robustness: {epsilon: 0.1, steps: 2, bounds: none, max_shift: 0.2}\n")


@pytest.fixture(scope="module")
def checked(tmp_path_factory, assets):
    folder = tmp_path_factory.mktemp("checked")
    config = write_config(folder / "audit.yaml", assets, max_share=0.95, extra=CHECKS_EXTRA,
                          report="report:\n  dir: out\n  formats: [csv, png, markdown]\n")
    result, _ = run_audit(load_config(config))
    return result, folder / "out"


def _lines_at(axes, x: float) -> list:
    return [line for line in axes.get_lines()
            if len(set(line.get_xdata())) == 1 and line.get_xdata()[0] == pytest.approx(x)]


def test_the_robustness_chart_is_the_rows_shifts_with_the_limit(checked):
    result, out = checked
    plan = next(p for p in audit_plans(result) if p.name == "chart-robustness.png")
    csv = pd.read_csv(out / "robustness.csv")
    (record,) = next(c for c in result.checks if c.check == "robustness").summary["robustness"]
    axes = render(plan).axes[0]
    heights = [b.get_height() for b in axes.patches if isinstance(b, Rectangle)]
    assert sum(heights) == len(csv) == result.rows  # every row counted once
    # The histogram's bins hold the rows' shifts (robustness.csv's shift column).
    counts = [((csv["shift"] >= r.shift_from) & ((csv["shift"] < r.shift_to)
                                                  | (r.Index == len(plan.data) - 1)
                                                  & (csv["shift"] <= r.shift_to))).sum()
              for r in plan.data.itertuples()]
    assert heights == counts
    assert _lines_at(axes, 0.2) and _lines_at(axes, record["p95_shift"])  # limit and p95
    assert "score units" in axes.get_xlabel() and axes.get_ylabel() == "rows"
    assert "Robustness" in axes.get_title(loc="left") and "attack" in axes.get_title(loc="left")


def test_the_monotonicity_chart_is_each_expectations_rate_and_limit(checked):
    result, out = checked
    plan = next(p for p in audit_plans(result) if p.name == "chart-monotonicity.png")
    csv = pd.read_csv(out / "monotonicity.csv")
    axes = render(plan).axes[0]
    bars = [b for b in axes.patches if isinstance(b, Rectangle)]
    assert [b.get_width() for b in bars] == pytest.approx(csv["violation_rate"].tolist())
    assert _lines_at(axes, 0.02)  # the limit, max_violation_rate
    assert [t.get_text() for t in axes.get_yticklabels()] == ["clarity (increasing)"]
    assert "%" in axes.get_xlabel() and "Monotonicity" in axes.get_title(loc="left")


def test_the_suspects_chart_is_labelled_by_feature_with_the_evidence(checked):
    result, out = checked
    plan = next(p for p in audit_plans(result) if p.name == "chart-suspects.png")
    csv = pd.read_csv(out / "suspects.csv").sort_values(["share", "feature"],
                                                         ascending=[False, True])
    axes = render(plan).axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == csv["feature"].tolist()
    bars = [b for b in axes.patches if isinstance(b, Rectangle)]
    assert [b.get_width() for b in bars] == pytest.approx(csv["share"].tolist())
    # The label's support: a segment from its share to its upper bound, per feature.
    segments = [s for c in axes.collections for s in c.get_segments()]
    assert [(float(s[0][0]), float(s[1][0])) for s in segments] == [
        pytest.approx(pair) for pair in zip(csv["evidence_share"], csv["evidence_high"],
                                            strict=True)]
    assert csv["evidence_limit"].tolist() == pytest.approx(
        (csv["evidence_high"] + 0.025).tolist())  # the default min_gap
    for limit in csv["evidence_limit"]:
        assert _lines_at(axes, limit)


def test_the_compare_chart_marks_what_the_table_marks_in_points(tmp_path, assets):
    """A change that is significant but under compare.min_change is not marked, in the
    chart as in comparison.md (the chart used to mark every significant change)."""
    save_exported(Linear(torch.tensor([WEIGHTS[0] / 4, *WEIGHTS[1:]]), n_features=3),
                  tmp_path / "old.pt2", n_features=3, dtype=torch.float64)

    def compare(min_change: float):
        config = write_config(tmp_path / "audit.yaml", assets, max_share=0.95,
                              extra=f"compare:\n  bootstrap_samples: 50\n"
                                    f"  min_change: {min_change}\n",
                              report="report:\n  dir: out\n  formats: [csv, markdown]\n")
        return run_compare(load_config(config), tmp_path / "old.pt2", assets / "scorer.pt2")[0]

    first = compare(0)
    changes = sorted(abs(first.table["delta_share"]) * 100)
    result = compare(round((changes[0] + changes[-1]) / 2, 3))
    table = result.table
    assert table["significant"].all() and 0 < table["changed"].sum() < len(table)
    plan = comparison_plans(result)[0]
    axes = render(plan).axes[0]
    texts = {t.get_text().strip() for t in axes.texts}
    for r in table.itertuples():
        mark = f"{r.delta_share * 100:+.1f}" + (" *" if r.changed else "")
        assert mark in texts
        assert f"| {mark} |" in (tmp_path / "out" / "comparison.md").read_text()
    assert _lines_at(axes, result.settings["min_change"])
    assert "percentage points" in axes.get_xlabel()


def test_a_failed_gate_under_its_share_is_not_called_over_its_limit():
    """A blind proxy fails its gate at 0.5%: the shares chart's legend must not say "over its
    limit"."""
    data = pd.DataFrame({"feature": ["a", "blind"], "share": [0.995, 0.005], "rank": [1, 2],
                         "flagged": [False, True], "proxy": [False, True]})
    figure = render(ChartPlan(name="x.png", title="t", kind="shares", data=data))
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == ["feature", "fails a gate"]
    assert not any("over" in t for t in legend)


# --- the linearity, layer_health and one_hot_levels checks' own charts ---------------------------

FAR_AND_NEAR = [-3.0, -2.0, -1.0, 0.0, 2.0, 3.0, 4.0, 5.0, 0.999, 0.9995, 1.0005, 1.001]


class _Kinks(nn.Module):
    """y = relu(a - 1) + b + 0.01 relu(c - 1): a third of the rows sit within a step of a's
    and of c's kink (off for both), but c's kink is a hundredth the size (not material)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x[:, 0] - 1) + x[:, 1] + 0.01 * torch.relu(x[:, 2] - 1)


def _colors(bars: list[Rectangle]) -> list[tuple[float, ...]]:
    return [tuple(round(c * 255) for c in b.get_facecolor()[:3]) for b in bars]


def test_the_linearity_chart_is_each_features_off_rate_with_the_limit(tmp_path):
    data = pd.DataFrame({"a": FAR_AND_NEAR, "b": np.linspace(0, 3, len(FAR_AND_NEAR)),
                         "c": FAR_AND_NEAR[::-1]})
    settings = AuditSettings(linearity=LinearitySettings(max_off_rate=0.2))
    result = audit_frame(_Kinks().double(), data, settings=settings)
    written = write_reports(result, tmp_path / "out", ["csv", "png"])
    csv = pd.read_csv(tmp_path / "out" / "linearity.csv").set_index("feature")
    # The premise: a and c are over the limit, only a's error is material; b is linear.
    assert csv.loc["a", "off_rate"] == csv.loc["c", "off_rate"] == pytest.approx(1 / 3)
    assert csv.loc["b", "off_rate"] == 0
    assert csv.loc["a", "material_error"] > 0.1 > csv.loc["c", "material_error"]
    plan = next(p for p in audit_plans(result) if p.name == "chart-linearity.png")
    axes = render(plan).axes[0]
    features = [t.get_text() for t in axes.get_yticklabels()]
    assert features == csv.index.tolist()
    bars = [b for b in axes.patches if isinstance(b, Rectangle)]
    assert [b.get_width() for b in bars] == pytest.approx(csv["off_rate"].tolist(), rel=1e-7)
    colors = dict(zip(features, _colors(bars), strict=True))
    assert colors == {"a": (0xC6, 0x28, 0x28), "c": (0xEF, 0x8F, 0x00), "b": (0x1F, 0x5F, 0xA8)}
    material = [t.get_text() for t in axes.texts if "material" in t.get_text()]
    assert len(material) == 1 and f"error {csv.loc['a', 'material_error']:.1%}" in material[0]
    assert _lines_at(axes, 0.2)  # the limit, linearity.max_off_rate
    assert "%" in axes.get_xlabel() and "Local linearity" in axes.get_title(loc="left")
    assert "chart-linearity.png" in {p.name for p in written}
    image = imread(tmp_path / "out" / "chart-linearity.png")
    assert image.shape[1] == 750 and image.std() > 0.05


def test_the_layer_health_chart_is_each_layers_ratio_on_a_log_scale():
    """y = W3 W2 W1 x: the Jacobian at a layer's output is the product of the later weights,
    so each layer's ratio to the last layer (whose Jacobian is 1) is that product's norm."""
    torch.manual_seed(4)
    layers = [nn.Linear(a, b, bias=False) for a, b in ((3, 6), (6, 5), (5, 1))]
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(20)
    stack = nn.Sequential(*layers).double()
    settings = AuditSettings(layer_health=LayerHealthSettings(max_ratio=100))
    result = audit_frame(stack, frame(rows=20), settings=settings)
    table = next(c for c in result.checks if c.check == "layer_health").tables[
        "layer_health.csv"]
    weights = [layer.weight.detach() for layer in stack]
    expected = [float(torch.linalg.matrix_norm(weights[2] @ weights[1] @ weights[0])),
                float(torch.linalg.matrix_norm(weights[2] @ weights[1])),
                float(torch.linalg.matrix_norm(weights[2])), 1.0]
    plan = next(p for p in audit_plans(result) if p.name == "chart-layer_health.png")
    axes = render(plan).axes[0]
    bars = [b for b in axes.patches if isinstance(b, Rectangle)]
    # Each bar runs from 1 (the last layer) to the layer's ratio.
    assert [b.get_x() for b in bars] == [1.0] * 4
    ends = [b.get_x() + b.get_width() for b in bars]
    assert ends == pytest.approx((table["median_norm"] / table["median_norm"].iloc[-1])
                                 .tolist(), rel=1e-12)
    assert ends == pytest.approx(expected, rel=1e-9)
    assert axes.get_xscale() == "log"
    assert _lines_at(axes, 100) and _lines_at(axes, 0.01)  # max_ratio and its inverse
    # The first layer's ratio (the one judged) is beyond 100: red; the input is grey.
    assert expected[1] > 100
    assert _colors(bars)[:2] == [(0x9E, 0x9E, 0x9E), (0xC6, 0x28, 0x28)]
    assert [t.get_text() for t in axes.get_yticklabels()] == [
        "(input)", "0 (Linear)", "1 (Linear)", "2 (Linear)"]
    assert "log scale" in axes.get_xlabel() and "Layer health" in axes.get_title(loc="left")


def test_the_one_hot_chart_is_each_levels_mean_score_change(tmp_path):
    """y = w.x over (x, r_a, r_b, r_c): switching a row to level t changes its score by
    w_t - w_(its level), so the mean over all rows is w_t minus the rows' mean level weight."""
    weights = [0.5, 1.0, -2.0, 3.0]
    levels = np.array([0, 1, 2, 0, 0, 1, 2, 2, 0, 1, 0, 0])
    data = pd.DataFrame({"x": np.linspace(-1, 1, len(levels)),
                         **{f"r_{n}": (levels == i).astype(float) for i, n in enumerate("abc")}})
    group = FeatureGroup("region", ("r_a", "r_b", "r_c"), kind="one_hot")
    result = audit_frame(LinearScorer(weights), data, settings=AuditSettings(groups=(group,)))
    write_reports(result, tmp_path / "out", ["csv", "png"])
    csv = pd.read_csv(tmp_path / "out" / "one_hot_levels.csv")
    every = csv[csv["from_level"] == "(any)"]
    plan = next(p for p in audit_plans(result) if p.name == "chart-one_hot-region.png")
    axes = render(plan).axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["r_a", "r_b", "r_c"]
    widths = [b.get_width() for b in axes.patches if isinstance(b, Rectangle)]
    assert widths == pytest.approx(every["mean_change"].tolist(), rel=1e-7)
    mean_level = np.mean(np.array(weights[1:])[levels])
    assert widths == pytest.approx([w - mean_level for w in weights[1:]], rel=1e-9)
    assert "score units" in axes.get_xlabel() and "region" in axes.get_title(loc="left")
    assert (tmp_path / "out" / "chart-one_hot-region.png").is_file()
