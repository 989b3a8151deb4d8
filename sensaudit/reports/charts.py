"""Which charts a report has, and the numbers each one draws: no drawing here (that is
:mod:`sensaudit.reports.chart_render`, the only module that imports matplotlib).

A :class:`ChartPlan` carries the exact table its chart is drawn from, taken from the same
result tables the CSV files are written from (sensitivity.csv, comparison.csv, the checks'
tables), so the HTML report prints the plotted numbers under each chart and the tests check
the bars against the CSV.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import ComparisonResult
from sensaudit.stats.row_sample import ContributionSample

# The distribution chart shows this many of each output's strongest features.
TOP_FEATURES = 8
# Box plots: the box spans the quartiles, the whiskers these percentiles (no outlier dots: a
# sample of thousands of rows would draw a smear of them).
WHISKERS = (5, 95)
# A check table is charted as bars of its first numeric column, at most this many rows.
TABLE_ROWS = 25


@dataclass
class ChartPlan:
    """One chart: its file name, title, kind ("shares", "distribution", "compare", "table")
    and the table it draws."""

    name: str
    title: str
    kind: str
    data: pd.DataFrame
    caption: str = ""
    options: dict = field(default_factory=dict)


def audit_plans(result: AuditResult) -> list[ChartPlan]:
    """Per output: feature shares, then the per-row spread of the top features'
    contributions; then one chart per table the checks produced."""
    names = _Names()
    plans = []
    multi = len(result.outputs) > 1
    for output in result.outputs:
        suffix = f" ({output})" if multi else ""
        group = result.table[result.table["output"] == output].sort_values(["rank", "feature"])
        data = group[["feature", "share", "rank", "flagged"]].reset_index(drop=True)
        data["proxy"] = data["feature"].isin(result.proxies)
        plans.append(ChartPlan(
            name=names.take("chart-shares", output if multi else None),
            title="Feature shares of the score's sensitivity" + suffix, kind="shares",
            data=data,
            caption="Each feature's share of the total scaled sensitivity (sensitivity.csv). "
                    "Red: flagged, over its limit; orange: a declared proxy within its limit."))
        sample = result.contributions
        if sample is not None and len(sample.rows):
            # The table ranks audit.groups too; the rows were sampled per feature.
            sampled = [f for f in group["feature"] if f in sample.features]
            spread = _distribution(sample, output, sampled[:TOP_FEATURES])
            shown = len(sample.rows)
            plans.append(ChartPlan(
                name=names.take("chart-contributions", output if multi else None),
                title=f"Per-row contributions of the top {len(spread)} features" + suffix,
                kind="distribution", data=spread,
                caption=("Contribution = gradient x the feature's std, in score units, over "
                         + (f"all {shown:,} rows" if shown == sample.seen else
                            f"a uniform sample of {shown:,} of {sample.seen:,} rows")
                         + f". Boxes: quartiles; whiskers: {WHISKERS[0]}th to "
                         f"{WHISKERS[1]}th percentile; line: median.")))
    for check in result.checks:
        for table_name, table in check.tables.items():
            plan = _table_plan(names, check.check, table_name, table)
            if plan is not None:
                plans.append(plan)
    return plans


def comparison_plans(result: ComparisonResult) -> list[ChartPlan]:
    """Per output: each feature's share before and after, with its bootstrap interval."""
    names = _Names()
    multi = len(result.new.outputs) > 1
    plans = []
    has_ci = "share_old_low" in result.table.columns
    for output in result.new.outputs:
        group = result.table[result.table["output"] == output]
        columns = ["feature", "share_old", "share_new", "delta_share"]
        if has_ci:
            columns += ["share_old_low", "share_old_high", "share_new_low", "share_new_high"]
        columns += ["rank_old", "rank_new", "significant", "flagged_old", "flagged_new"]
        interval = (f"; bars: {result.settings['confidence']:.0%} bootstrap intervals"
                    if has_ci else "")
        plans.append(ChartPlan(
            name=names.take("chart-compare-shares", output if multi else None),
            title="Feature shares before and after" + (f" ({output})" if multi else ""),
            kind="compare", data=group[columns].reset_index(drop=True),
            caption=f"Old model grey, new model blue (comparison.csv){interval}. "
                    "* marks a change larger than its bootstrap noise."))
    return plans


def _distribution(sample: ContributionSample, output: str, features: list[str]
                  ) -> pd.DataFrame:
    """Per feature: the box plot's statistics over the sampled rows' contributions."""
    rows = []
    for feature in features:
        values = sample.feature_values(output, feature)
        low, q1, median, q3, high = np.percentile(values, [WHISKERS[0], 25, 50, 75,
                                                           WHISKERS[1]])
        rows.append({"feature": feature, "rows": len(values), "mean": float(values.mean()),
                     "whisker_low": float(low), "q1": float(q1), "median": float(median),
                     "q3": float(q3), "whisker_high": float(high)})
    return pd.DataFrame(rows)


def _table_plan(names: _Names, check: str, table_name: str,
                table: pd.DataFrame) -> ChartPlan | None:
    """A check's table as bars: its first text column as labels, first numeric as values."""
    labels = [c for c in table.columns if pd.api.types.is_string_dtype(table[c])]
    numbers = [c for c in table.columns
               if pd.api.types.is_numeric_dtype(table[c]) and table[c].dtype != bool]
    if not labels or not numbers or table.empty:
        return None
    data = table[[labels[0], numbers[0]]].head(TABLE_ROWS).reset_index(drop=True)
    stem = table_name.rsplit(".", 1)[0]
    return ChartPlan(name=names.take(f"chart-{check}-{stem}", None),
                     title=f"{check}: {stem}", kind="table", data=data,
                     caption=f"{numbers[0]} by {labels[0]}, from the {check} check's "
                             f"{table_name}" + (f" (first {TABLE_ROWS} rows)"
                                                if len(table) > TABLE_ROWS else ""),
                     options={"label": labels[0], "value": numbers[0]})


class _Names:
    """Chart file names: safe characters only (output names come from configs), unique."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, stem: str, output: str | None) -> str:
        base = _slug(stem if output is None else f"{stem}-{output}")
        name, n = f"{base}.png", 2
        while name in self.used:
            name, n = f"{base}-{n}.png", n + 1
        self.used.add(name)
        return name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-") or "chart"
