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
from typing import Any

import numpy as np
import pandas as pd

from sensaudit.checks.base import CheckResult
from sensaudit.checks.layer_health import INPUT as LAYER_INPUT
from sensaudit.checks.one_hot import ANY as ONE_HOT_ANY
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import ComparisonResult, noise_name
from sensaudit.stats.row_sample import ContributionSample

# The distribution chart shows this many of each output's strongest features.
TOP_FEATURES = 8
# Box plots: the box spans the quartiles, the whiskers these percentiles (no outlier dots: a
# sample of thousands of rows would draw a smear of them).
WHISKERS = (5, 95)
# A check table is charted as bars of its first numeric column, at most this many rows.
TABLE_ROWS = 25
# The robustness chart's histogram of per-row shifts has this many bins.
SHIFT_BINS = 30


@dataclass
class ChartPlan:
    """One chart: its file name, title, kind (how chart_render draws it: "shares",
    "distribution", "compare", a check's own kind, or "table") and the table it draws."""

    name: str
    title: str
    kind: str
    data: pd.DataFrame
    caption: str = ""
    options: dict[str, Any] = field(default_factory=dict)


def audit_plans(result: AuditResult) -> list[ChartPlan]:
    """Per output: feature shares, then the per-row spread of the top features' scaled
    gradients (or attributions); then each check's chart (a purpose-built one where the check
    has one, else a bar chart of its first table)."""
    names = _Names()
    plans = []
    multi = len(result.outputs) > 1
    for output in result.outputs:
        suffix = f" ({output})" if multi else ""
        group = result.table[result.table["output"] == output].sort_values(["rank", "feature"])
        data = group[["feature", "share", "rank", "flagged"]].reset_index(drop=True)
        data["proxy"] = data["feature"].isin(result.proxies)
        # audit.groups' rows after the features': a group's share is its members' sum.
        data["group"] = ~data["feature"].isin(result.features)
        data = pd.concat([data[~data["group"]], data[data["group"]]], ignore_index=True)
        plans.append(ChartPlan(
            name=names.take("chart-shares", output if multi else None),
            title="Share of the score's sensitivity per feature" + suffix, kind="shares",
            data=data,
            caption="Each feature's share of the total scaled sensitivity, in % "
                    "(sensitivity.csv). Red: the feature fails a gate (see Gates); orange: a "
                    "declared proxy that passes its gate."
                    + (" Groups (audit.groups) follow the features." if data["group"].any()
                       else "")))
        sample = result.contributions
        if sample is not None and len(sample.rows):
            # The sample holds features only: audit.groups' rows have no per-row values.
            top = [f for f in group["feature"] if f in sample.features][:TOP_FEATURES]
            spread = _distribution(sample, output, top)
            shown = len(sample.rows)
            what = ("scaled gradient (gradient x the feature's std: the score change for a "
                    "one-std change at the row)" if result.per_unit else
                    f"{result.method} attribution (score units)")
            plans.append(ChartPlan(
                name=names.take("chart-contributions", output if multi else None),
                title=(f"Per-row {'scaled gradient' if result.per_unit else 'attribution'} "
                       f"of the top {len(spread)} features" + suffix),
                kind="distribution", data=spread,
                caption=(f"Each row's {what}, over "
                         + (f"all {shown:,} rows" if shown == sample.seen else
                            f"a uniform sample of {shown:,} of {sample.seen:,} rows")
                         + f". Boxes: quartiles; whiskers: {WHISKERS[0]}th to "
                         f"{WHISKERS[1]}th percentile; line: median; diamond: mean. Not the "
                         "examples' contribution, which is measured from the baseline."),
                options={"per_unit": result.per_unit}))
    for check in result.checks:
        build = _CHECK_CHARTS.get(check.check)
        if build is not None:
            plans += build(names, check, multi)
            continue
        for table_name, table in check.tables.items():
            plan = _table_plan(names, check.check, table_name, table)
            if plan is not None:
                plans.append(plan)
    return plans


def comparison_plans(result: ComparisonResult) -> list[ChartPlan]:
    """Per output: each feature's change of share, in points, with its interval, marked
    (*) exactly where comparison.md marks it (``changed``)."""
    names = _Names()
    multi = len(result.new.outputs) > 1
    plans = []
    settings = result.settings
    has_ci = "delta_share_low" in result.table.columns
    for output in result.new.outputs:
        group = result.table[result.table["output"] == output]
        columns = ["feature", "share_old", "share_new", "delta_share"]
        if has_ci:
            columns += ["delta_share_low", "delta_share_high"]
        columns += ["changed", "flagged_old", "flagged_new"]
        interval = (f"; whiskers: its {settings['confidence']:.0%} interval "
                    f"({noise_name(settings)})" if has_ci else "")
        marked = (f"* marks a change whose interval excludes zero and that is at least "
                  f"{settings['min_change']:g} points (compare.min_change; dashed lines), as "
                  "in the table" if has_ci else "* marks a change of at least "
                  f"{settings['min_change']:g} points (compare.min_change)")
        if "status" in group.columns:  # models that take different columns
            columns.insert(1, "status")
        plans.append(ChartPlan(
            name=names.take("chart-compare-shares", output if multi else None),
            title="Change in each feature's share of the sensitivity, old to new"
                  + (f" ({output})" if multi else ""),
            kind="compare", data=group[columns].reset_index(drop=True),
            caption=f"New share minus old share, in percentage points (comparison.csv)"
                    f"{interval}. {marked}.",
            options={"min_change": float(settings["min_change"])}))
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
                     title=f"{check} check: {numbers[0].replace('_', ' ')} per "
                           f"{labels[0].replace('_', ' ')}", kind="table", data=data,
                     caption=f"{numbers[0]} by {labels[0]}, from the {check} check's "
                             f"{table_name}" + (f" (first {TABLE_ROWS} rows)"
                                                if len(table) > TABLE_ROWS else ""),
                     options={"label": labels[0], "value": numbers[0]})


def _robustness(names: _Names, check: CheckResult, multi: bool) -> list[ChartPlan]:
    """Per output: the distribution of the rows' shifts, with the limit on the 95th
    percentile (robustness.max_shift) and the observed 95th percentile drawn."""
    table = check.tables.get("robustness.csv")
    records = check.summary.get("robustness", [])
    plans = []
    for record in records:
        output = record["output"]
        shift = (table.loc[table["output"] == output, "shift"].to_numpy(dtype=float)
                 if table is not None and len(table) else np.zeros(0))
        shift = shift[np.isfinite(shift)]
        if not len(shift):
            continue
        top = max(float(shift.max()), float(record["limit"] or 0.0))
        edges = np.linspace(0.0, top if top > 0 else 1.0, SHIFT_BINS + 1)
        counts, _ = np.histogram(shift, bins=edges)
        data = pd.DataFrame({"shift_from": edges[:-1], "shift_to": edges[1:], "rows": counts})
        plans.append(ChartPlan(
            name=names.take("chart-robustness", output if multi else None),
            title="Robustness: how far an attack moves each row's score"
                  + (f" ({output})" if multi else ""),
            kind="histogram", data=data,
            caption=(f"Rows by the largest score shift an attack within {record['epsilon']:g} "
                     f"std per feature reaches ({record['steps']} projected-gradient steps), in "
                     f"score units (robustness.csv, {len(shift):,} rows). Solid line: the 95th "
                     "percentile"
                     + (", dashed red: its limit (robustness.max_shift)"
                        if record["limit"] is not None else "") + "."),
            options={"p95": record["p95_shift"], "limit": record["limit"],
                     "largest": record["max_shift"]}))
    return plans


def _monotonicity(names: _Names, check: CheckResult, multi: bool) -> list[ChartPlan]:
    """Every expectation's violation rate beside its limit."""
    table = check.tables.get("monotonicity.csv")
    if table is None or table.empty:
        return []
    data = table[["output", "feature", "direction", "violation_rate", "max_violation_rate",
                  "passed"]].reset_index(drop=True)
    data["label"] = [f"{r.feature} ({r.direction})" + (f" [{r.output}]" if multi else "")
                     for r in data.itertuples()]
    return [ChartPlan(
        name=names.take("chart-monotonicity", None),
        title="Monotonicity: rows where the score moves the wrong way", kind="rates",
        data=data,
        caption="Per expectation (audit.expect): the share of rows, in %, whose gradient has "
                "the sign the expectation rules out (monotonicity.csv). Dashed red tick: its "
                "limit (max_violation_rate); red bar: over it.")]


def _suspects(names: _Names, check: CheckResult, multi: bool) -> list[ChartPlan]:
    """Per output: each feature's share against the label's support for it."""
    table = check.tables.get("suspects.csv")
    if table is None or table.empty:
        return []
    plans = []
    for output, group in table.groupby("output", sort=False):
        columns = ["feature", "share", "evidence_share", "evidence_high", "evidence_limit",
                   "suspect", "declared"]
        data = (group[[c for c in columns if c in group.columns]]
                .sort_values(["share", "feature"], ascending=[False, True], kind="stable")
                .reset_index(drop=True))
        plans.append(ChartPlan(
            name=names.take("chart-suspects", str(output) if multi else None),
            title="Suspected proxies: each feature's share against the label's support"
                  + (f" ({output})" if multi else ""),
            kind="evidence", data=data,
            caption="Bars: each feature's share of the sensitivity, in % (suspects.csv); red: a "
                    "suspected proxy, orange: a declared one. Grey line: the label's support "
                    "for the feature (its share of the label's fit, diamond) up to its upper "
                    "bound; dashed tick: the share over which a feature is suspected on its "
                    "evidence alone (upper bound plus audit.checks.suspects.min_gap)."))
    return plans


def _linearity(names: _Names, check: CheckResult, multi: bool) -> list[ChartPlan]:
    """Per output: each feature's off rate against linearity.max_off_rate, the features whose
    mismatch is also material (the ones that warn) marked."""
    table = check.tables.get("linearity.csv")
    limits = check.summary.get("linearity_settings")
    if table is None or table.empty or limits is None:
        return []
    plans = []
    for output, group in table.groupby("output", sort=False):
        data = group[["feature", "off_rate", "material_error", "agreement"]].reset_index(
            drop=True)
        data["over"] = data["off_rate"] > limits["max_off_rate"]
        data["material"] = data["material_error"] > limits["tolerance"]
        data["warns"] = data["over"] & data["material"]
        verdict = "fails its gate" if limits["gate"] else "warns"
        plans.append(ChartPlan(
            name=names.take("chart-linearity", str(output) if multi else None),
            title=f"Local linearity: rows where the gradient mispredicts a {limits['step']:g}"
                  "-std step, per feature" + (f" ({output})" if multi else ""),
            kind="off_rates", data=data,
            caption=(f"Bars: the share of rows, in %, where moving the feature alone by "
                     f"{limits['step']:g} std changes the score by more than "
                     f"{limits['tolerance']:.0%} away from gradient x step (linearity.csv's "
                     f"off_rate). Dashed red line: the limit (linearity.max_off_rate, "
                     f"{limits['max_off_rate']:.0%}). Beside each bar: the gradient's mean "
                     "error for a one-std move, as a share of the score's std "
                     f"(material_error; material over {limits['tolerance']:.0%}). A feature "
                     f"{verdict} only when it is over the limit and its error is material "
                     "(red); orange: over the limit, but the error is not material (kinks)."),
            options={"max_off_rate": float(limits["max_off_rate"]), "verdict": verdict}))
    return plans


def _layer_health(names: _Names, check: CheckResult, multi: bool) -> list[ChartPlan]:
    """Each layer's median Jacobian norm over the last layer's, on a log scale, with the
    limits layer_health.max_ratio and its inverse: the first layer's ratio is the one judged."""
    table = check.tables.get("layer_health.csv")
    summary = check.summary.get("layer_health", {})
    if table is None or "depth_ratio" not in summary:
        return []  # fewer than two layers reached, or a dead last layer: no ratio to draw
    inner = table[table["layer"] != LAYER_INPUT]
    last = float(inner["median_norm"].iloc[-1])
    data = table[["depth", "layer", "kind", "median_norm", "p05_norm", "p95_norm"]].reset_index(
        drop=True)
    data["ratio"] = data["median_norm"] / last
    data["ratio_p05"] = data["p05_norm"] / last
    data["ratio_p95"] = data["p95_norm"] / last
    data["judged"] = data["layer"] == inner["layer"].iloc[0]
    limit = float(summary["max_ratio"])
    return [ChartPlan(
        name=names.take("chart-layer_health", None),
        title="Layer health: the score's gradient at each layer, relative to the last layer",
        kind="layer_ratios", data=data,
        caption=(f"Each layer's median norm of d score / d activations over the rows, divided "
                 f"by the last layer's ({last:.4g}), on a log scale (layer_health.csv). "
                 "Whiskers: the rows' 5th to 95th percentile, on the same scale. The check "
                 f"judges the first layer's ratio ({float(summary['depth_ratio']):.3g}): "
                 f"beyond the dashed red lines (layer_health.max_ratio, {limit:g}, or its "
                 "inverse) the gradients explode or vanish through depth."
                 + (" The input's row is shown, not judged." if (data["layer"] == LAYER_INPUT)
                    .any() else "")),
        options={"max_ratio": limit})]


def _one_hot_levels(names: _Names, check: CheckResult, multi: bool) -> list[ChartPlan]:
    """Per group and output: the mean score change of switching every row to each level."""
    table = check.tables.get("one_hot_levels.csv")
    if table is None or table.empty:
        return []
    plans = []
    every = table[table["from_level"] == ONE_HOT_ANY]
    for (output, group), levels in every.groupby(["output", "group"], sort=False):
        data = levels[["group", "to_level", "rows", "mean_change"]].reset_index(drop=True)
        plans.append(ChartPlan(
            name=names.take(f"chart-one_hot-{group}", str(output) if multi else None),
            title=f"One-hot group {group}: mean score change of switching every row to each "
                  "level" + (f" ({output})" if multi else ""),
            kind="levels", data=data,
            caption=(f"For each level of {group}: the score change when every row's group "
                     "columns are set to that level (its column 1, the others 0), averaged "
                     f"over all {int(data['rows'].iloc[0]):,} rows, in score units "
                     "(one_hot_levels.csv, from_level (any)). Exact, from the model; no limit: "
                     "this check reports, it does not judge.")))
    return plans


def _protected_proxies(names: _Names, check: CheckResult, multi: bool) -> list[ChartPlan]:
    """Per protected column (and output): every candidate's association against its share,
    each with its interval, and the two limits: the proxies are the upper-right corner."""
    table = check.tables.get("protected_proxies.csv")
    limits = check.summary.get("protected_limits")
    if table is None or table.empty or not limits:
        return []
    plans = []
    for (protected, output), group in table.groupby(["protected", "output"], sort=False):
        data = group[["candidate", "candidate_kind", "association", "association_low",
                      "association_high", "share", "share_low", "share_high", "flagged",
                      "possible", "allowed"]].reset_index(drop=True)
        where = f" ({output})" if multi else ""
        plans.append(ChartPlan(
            name=names.take(f"chart-protected_proxies-{protected}" if len(
                table["protected"].unique()) > 1 else "chart-protected_proxies",
                str(output) if multi else None),
            title=f"Proxies for the protected column '{protected}': association against "
                  "share" + where,
            kind="proxy_map", data=data,
            caption=(f"Each input, group and the best linear combination of inputs "
                     f"(protected_proxies.csv): its association with '{protected}' "
                     "(canonical correlation, across) against its share of the sensitivity "
                     f"(up), each with its {limits['confidence']:.0%} interval (the "
                     "combination's share is a point estimate). Dashed red: the limits "
                     "(audit.protected.max_association, max_share); a candidate whose "
                     "interval lies wholly beyond both is a proxy (red). Orange: beyond both "
                     "on its point estimates only, or allowed."),
            options=dict(limits)))
    return plans


_CHECK_CHARTS = {"robustness": _robustness, "monotonicity": _monotonicity,
                 "suspects": _suspects, "linearity": _linearity,
                 "layer_health": _layer_health, "one_hot_levels": _one_hot_levels,
                 "protected_proxies": _protected_proxies}


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
