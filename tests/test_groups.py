"""audit.groups: a proxy split over correlated columns, and one-hot level switches.

y = w.x on independent columns: feature j's share is |w_j| std_j / sum_k |w_k| std_k, so two
columns each holding 30% stay under a 35% limit apart and hold 60% together. Switching a row's
one-hot columns from level a to level b changes a linear score by exactly w_b - w_a.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers_checks import LinearScorer, check_result, run_cli, write_setup

from sensaudit import AuditSettings, ProxyLimit, audit_frame
from sensaudit.results.audit_result import SENSITIVITY_COLUMNS
from sensaudit.settings.checks import FeatureGroup


def _split_frame(rows: int = 400) -> pd.DataFrame:
    """Three columns with exactly equal sample stds: shares follow |w| alone."""
    generator = np.random.default_rng(5)
    raw = generator.normal(size=(rows, 3))
    raw = (raw - raw.mean(0)) / raw.std(0, ddof=1)
    return pd.DataFrame(raw, columns=["length", "words", "clarity"])


MODEL = [3.0, 3.0, 4.0]  # shares 0.3, 0.3, 0.4
LENGTH = FeatureGroup("size", ("length", "words"))


def test_a_proxy_split_over_two_columns_passes_per_column_and_fails_as_a_group():
    data = _split_frame()
    per_column = AuditSettings(proxies=(ProxyLimit("length", max_share=0.35),
                                        ProxyLimit("words", max_share=0.35)))
    result = audit_frame(LinearScorer(MODEL), data, settings=per_column)
    assert result.passed
    np.testing.assert_allclose(result.table.set_index("feature").loc[
        ["length", "words", "clarity"], "share"], [0.3, 0.3, 0.4], rtol=1e-9)

    grouped = AuditSettings(proxies=(ProxyLimit("size", max_share=0.35),), groups=(LENGTH,))
    result = audit_frame(LinearScorer(MODEL), data, settings=grouped)
    assert not result.passed
    (flag,) = result.gates.flags
    assert (flag.subject, flag.limit) == ("size", "share <= 35%")
    assert flag.details["share"] == pytest.approx(0.6)
    table = result.table.set_index("feature")
    assert table.loc["size", "flagged"] and not table.loc["length", "flagged"]
    assert "**size** is a declared proxy group" in result.findings[0]
    assert "length 30.0%" in result.findings[0] and "words 30.0%" in result.findings[0]


def test_group_rows_and_the_group_column_in_the_table():
    result = audit_frame(LinearScorer(MODEL), _split_frame(),
                         settings=AuditSettings(groups=(LENGTH,)))
    table = result.table
    assert table.columns.tolist() == [*SENSITIVITY_COLUMNS, "group"]
    # The features ranked first (clarity; then length and words, equal up to rounding), then
    # the group's row.
    assert table["feature"].tolist()[0] == "clarity" and table["feature"].tolist()[3] == "size"
    assert set(table["feature"].tolist()[1:3]) == {"length", "words"}
    assert table["group"].tolist() == ["", "size", "size", "size"]
    size = table.iloc[3]
    assert size["share"] == pytest.approx(0.6)
    assert size["scaled_sensitivity"] == pytest.approx(table.iloc[1:3]["scaled_sensitivity"].sum())
    # Ranked among the groups and the ungrouped features: the group (0.6) before clarity.
    assert size["rank"] == 1
    assert np.isnan(size["mean_gradient"]) and np.isnan(size["std"])
    # The features keep their own ranks.
    assert table["rank"].tolist()[0] == 1 and set(table["rank"].tolist()[1:3]) <= {2, 3}


def test_without_groups_the_table_is_unchanged():
    result = audit_frame(LinearScorer(MODEL), _split_frame())
    assert result.table.columns.tolist() == SENSITIVITY_COLUMNS


def test_a_one_hot_level_switch_on_a_linear_model_is_the_weight_difference():
    generator = np.random.default_rng(2)
    rows = 90
    level = generator.integers(0, 3, rows)
    data = pd.DataFrame({"x": generator.normal(size=rows),
                         "north": (level == 0) * 1.0, "south": (level == 1) * 1.0,
                         "west": (level == 2) * 1.0})
    data.loc[5, ["north", "south", "west"]] = [0.0, 0.0, 0.0]  # not exactly one-hot: "(other)"
    level[5] = -1
    w = [0.7, 1.0, -2.0, 0.25]
    settings = AuditSettings(groups=(FeatureGroup("region", ("north", "south", "west"),
                                                  "one_hot"),))
    result = audit_frame(LinearScorer(w), data, settings=settings, chunk_rows=40)
    table = check_result(result, "one_hot_levels").tables["one_hot_levels.csv"]
    levels = {"north": 1.0, "south": -2.0, "west": 0.25}
    for row in table.itertuples():
        if row.from_level == "(any)":
            current = np.array([[1.0, -2.0, 0.25][k] if k >= 0 else 0.0 for k in level])
            expected = levels[row.to_level] - current.mean()
            assert row.rows == rows
        elif row.from_level == "(other)":
            expected = levels[row.to_level] - 0.0
            assert row.rows == 1
        else:
            expected = levels[row.to_level] - levels[row.from_level]
            assert row.rows == int((level == ["north", "south", "west"].index(
                row.from_level)).sum())
        assert row.mean_change == pytest.approx(expected, abs=1e-12)
    assert set(table["from_level"]) == {"(any)", "(other)", "north", "south", "west"}
    assert any("One-hot group **region**" in n for n in result.findings)


def test_groups_through_the_cli_and_every_report(tmp_path):
    config = write_setup(tmp_path, LinearScorer(MODEL), _split_frame(),
                         {"groups": {"size": ["length", "words"]},
                          "proxies": [{"feature": "size", "max_share": 0.35}]})
    code, summary = run_cli(config)
    assert code == 1
    assert [(f["feature"], f["limit"]) for f in summary["flags"]] == [("size", "share <= 35%")]
    csv = pd.read_csv(tmp_path / "out" / "sensitivity.csv", keep_default_na=False)
    assert csv["group"].tolist() == ["", "size", "size", "size"]
    assert csv["feature"].tolist()[3] == "size"
    assert "| 1 | size (group) | 60.0% |" in (tmp_path / "out" / "report.md").read_text()


def test_groups_with_the_png_and_html_formats(tmp_path):
    """Issue 20 (3): any audit.groups entry with png or html crashed the chart of per-row
    values ("'size' is not in list", exit 3): a group has no per-row values of its own. The
    charts now draw the features' spread, and the shares chart lists the group after them."""
    pytest.importorskip("matplotlib", reason="the charts extra (matplotlib) is not installed")
    config = write_setup(tmp_path, LinearScorer(MODEL), _split_frame(),
                         {"groups": {"size": ["length", "words"]}})
    config.write_text(config.read_text() + "  formats: [png, html, markdown, json]\n")
    code, _ = run_cli(config)
    assert code == 0
    out = tmp_path / "out"
    assert {"chart-shares.png", "chart-contributions.png", "report.html"} <= {
        p.name for p in out.iterdir()}
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "size (group)" in html
    assert "](chart-contributions.png)" in (out / "report.md").read_text(encoding="utf-8")
