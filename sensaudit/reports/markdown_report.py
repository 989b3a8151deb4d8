"""Markdown fit to paste into a pull request or a CI job summary: report.md, comparison.md."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sensaudit._version import __version__
from sensaudit.checks.base import Gate, Notice
from sensaudit.core.text_safety import markdown_code, markdown_line, markdown_name, visible
from sensaudit.reports.base import ReportWriter
from sensaudit.reports.charts import audit_plans, comparison_plans
from sensaudit.results.audit_result import AuditResult, Driver
from sensaudit.results.comparison import (
    INPUTS_NOTE,
    ComparisonResult,
    gate_change,
    input_status,
    noise_name,
    rank_move,
    share_cell,
)
from sensaudit.results.gate_text import subject


class MarkdownReport(ReportWriter):
    format = "markdown"

    def audit(self, result: AuditResult) -> None:
        # With the png format the charts sit beside report.md: link them.
        charts = ([(p.name, p.title) for p in audit_plans(result)]
                  if "png" in self.out.formats else [])
        self.out.write_text("report.md", audit_markdown(result, charts=charts))

    def comparison(self, result: ComparisonResult) -> None:
        charts = ([(p.name, p.title) for p in comparison_plans(result)]
                  if "png" in self.out.formats else [])
        self.out.write_text("comparison.md", comparison_markdown(result, charts=charts))


def verdict_counts(result: AuditResult) -> str:
    """The verdict's counts as the terminal gives them, with what each names: "0 flag(s), 1
    warning(s): scan_minutes (suspects)". A report that says PASSED says what it warns of."""
    multi = len(result.outputs) > 1
    items: list[Gate | Notice] = [*result.gates.flags, *result.gates.warnings]
    named = [f"{subject(item, multi)} ({item.check})" for item in items]
    listed = ", ".join(named[:6]) + (f" and {len(named) - 6} more" if len(named) > 6 else "")
    return (f"{len(result.gates.flags)} flag(s), {len(result.gates.warnings)} warning(s)"
            + (f": {listed}" if named else ""))


def audit_markdown(result: AuditResult, charts: Sequence[tuple[str, str]] = ()) -> str:
    """A report fit to paste into a pull request or a CI job summary; ``charts`` (file name,
    title) are linked as images beside it."""
    verdict = "PASSED" if result.passed else "FAILED"
    lines = [
        f"# sensaudit: {verdict}",
        "",
        f"- Verdict: {markdown_line(verdict_counts(result))}",
        f"- Model: {markdown_code(result.model_path)} ({result.model_format})",
        f"- Data: {markdown_code(result.data_path)}, {result.rows:,} rows audited"
        + (f", {result.rows_dropped:,} dropped for missing values" if result.rows_dropped else ""),
        f"- Features: {len(result.features)}; outputs: {_names(result.outputs)}",
        *[f"- {line}" for line in [method_sentence(result)] if line],
        "",
        "## Findings",
        "",
    ]
    lines += [f"- {markdown_line(text)}" for text in result.findings]
    if result.nonfinite_rows:
        ids = _names(str(i) for i in result.nonfinite_ids)
        allowed = "allowed by audit.allow_nonfinite" if result.nonfinite_allowed else (
            "this fails the audit (set audit.allow_nonfinite: true to accept)")
        lines.append(f"- {result.nonfinite_rows:,} rows gave non-finite scores or gradients "
                     f"and were left out of the statistics ({allowed}); first ids: {ids}.")
    for check in result.checks:
        for title, section in check.sections.items():
            # A check writes its section as markdown and escapes the names it quotes
            # (checks/suspects.py); no line it holds may hold another.
            lines += ["", f"## {title}", "", *map(visible, section)]
    lines += ["", "## Feature sensitivity", ""]
    if result.per_unit:
        lines += ["`share` is each feature's part of the total scaled sensitivity (std x mean "
                  "|gradient|: the typical score change for a one-standard-deviation change).",
                  ""]
    else:
        lines += ["`share` is each feature's part of the total mean |attribution| (the typical "
                  "part of the score's change from the baseline the feature accounts for, in "
                  "score units).", ""]
    for output, group in result.table.groupby("output", sort=False):
        if len(result.outputs) > 1:
            lines += [f"### Output {markdown_code(output)}", ""]
        if result.per_unit:
            lines += ["| rank | feature | share | scaled sensitivity | mean gradient | "
                      "mean abs gradient | std | flagged |",
                      "|---:|---|---:|---:|---:|---:|---:|:---:|"]
        else:
            lines += ["| rank | feature | share | mean abs attribution | mean attribution | "
                      "std | flagged |", "|---:|---|---:|---:|---:|---:|:---:|"]
        # Without audit.groups, by rank; with them, as ranked: the groups' rows after the
        # features'.
        for r in (group if "group" in group.columns else group.sort_values("rank")).itertuples():
            mark = "**yes**" if r.flagged else ""
            name = markdown_name(r.feature) + (
                " (group)" if getattr(r, "group", None) == r.feature else "")
            if result.per_unit:
                lines.append(f"| {r.rank} | {name} | {r.share:.1%} | {r.scaled_sensitivity:.4g} "
                             f"| {_num(r.mean_gradient)} | {_num(r.mean_abs_gradient)} "
                             f"| {_num(r.std)} | {mark} |")
            else:
                lines.append(f"| {r.rank} | {name} | {r.share:.1%} | "
                             f"{_num(r.mean_abs_attribution)} | {_num(r.mean_attribution)} | "
                             f"{_num(r.std)} | {mark} |")
        lines.append("")
    for check in result.checks:  # each check's own small tables
        for title, frame in check.report_tables.items():
            lines += [f"## {title}", "", *frame_markdown(frame), ""]
    lines += _chart_links(charts)
    lines += examples_markdown(result)
    lines.append(f"<sub>sensaudit {__version__}</sub>")
    return "\n".join(lines) + "\n"


def frame_markdown(frame: pd.DataFrame) -> list[str]:
    """A small table as markdown lines: numbers right-aligned to 4 significant digits, empty
    cells for missing values."""
    if frame.empty:
        return ["(no rows)"]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(
        frame[c]) for c in frame.columns]
    lines = ["| " + " | ".join(markdown_name(c) for c in frame.columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    percent = [is_share_column(c) for c in frame.columns]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(
            _percent(v) if p else _cell(v) for v, p in zip(row, percent, strict=True)) + " |")
    return lines


def is_share_column(name: object) -> bool:
    """A column of shares or rates (fractions), shown as percentages in every report."""
    text = str(name)
    return "share" in text or text.endswith("rate")


def _percent(value: object) -> str:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return _cell(value)
    return "" if math.isnan(float(value)) else f"{float(value):.1%}"


def _cell(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return _names(value)
    if isinstance(value, (float, np.floating)):
        return _num(float(value))
    if value is None:
        return ""
    return markdown_name(value)


def _names(names: Iterable[object]) -> str:
    """Names from the data (features, outputs, ids), listed inline."""
    return ", ".join(markdown_name(n) for n in names)


def _num(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4g}"


def method_sentence(result: AuditResult) -> str | None:
    """One sentence: the method, its settings and baseline, and what it measures."""
    details = result.method_details
    if not details:
        return None
    settings = ", ".join(f"{k} {v}" for k, v in details.get("parameters", {}).items())
    return (f"Method: `{details['name']}`" + (f" ({settings})" if settings else "")
            + f", baseline {_baseline_words(details['baseline'])}: {details['measures']}.")


def _baseline_words(baseline: dict[str, Any]) -> str:
    kind: str = baseline["kind"]  # as describe_baseline records it
    if kind == "mapping":
        return "as given for " + _names(baseline["given"]) + ", the mean for the others"
    if kind == "median":
        return "the features' medians" + ("" if baseline.get("exact", True)
                                          else " (from a uniform sample of the rows)")
    return {"mean": "the features' means", "zero": "zero"}.get(kind, kind)


SECTION_TITLES = {
    "proxies": "Rows where the declared proxies move the score most",
    "misscored": "Rows scored furthest from their label",
    "strongest": "Rows where one feature moves the score most",
}


def examples_markdown(result: AuditResult) -> list[str]:
    """The rows worth reading, each with its feature values next to what they add to the
    score, in words."""
    if not result.examples:
        return []
    if result.per_unit:
        meaning = ("gradient x (value - baseline): the score change the feature accounts for at "
                   "this row, to first order; where the score saturates this understates it, "
                   "and audit.method: integrated_gradients accounts for the whole change from "
                   "the baseline")
    else:
        meaning = (f"the {result.method} attribution: the part of the score's change from the "
                   "baseline the feature accounts for")
    lines = ["## Examples to look at", "",
             f"Each row's strongest drivers, with the row's value and the baseline it is measured "
             f"from (contribution: {meaning}). All rows are in examples.csv.", ""]
    labels = result.method_details.get("baseline_labels", {})
    section = None
    for ex in result.examples:
        if (ex.reason, ex.output) != section:
            where = f" (output {markdown_code(ex.output)})" if len(result.outputs) > 1 else ""
            lines += ([] if section is None else [""]) + [
                f"### {SECTION_TITLES.get(ex.reason, ex.reason)}{where}", ""]
            section = (ex.reason, ex.output)
        label = ""
        if ex.label is not None:
            label = f", label {ex.label:g}"
            if ex.reason == "misscored" and ex.rank_value == abs(ex.score - ex.label):
                label += f" (off by {ex.rank_value:.3g})"
            elif ex.reason == "misscored":  # a logit against a 0/1 label: on the probability
                label += (f" (probability {abs(ex.label - ex.rank_value):.3g}, off by "
                          f"{ex.rank_value:.3g})")
        why = "; ".join(_driver_words(d, labels.get(d.feature, "baseline")) for d in ex.drivers)
        if ex.proxies:
            why += ("; declared prox" + ("y: " if len(ex.proxies) == 1 else "ies: ") + "; ".join(
                _driver_words(d, labels.get(d.feature, "baseline")) for d in ex.proxies))
        lines.append(f"- {markdown_code(ex.id)}: score {ex.score:.4g}{label}. {why}.")
    lines.append("")
    return lines


def _driver_words(driver: Driver, called: str) -> str:
    """'copy_length = 412 (mean 180) adds +0.21 to the score'."""
    effect = (f"adds {driver.contribution:+.2g} to the score" if driver.contribution >= 0
              else f"takes {-driver.contribution:.2g} off the score")
    return (f"{markdown_name(driver.feature)} = {driver.value:.4g} ({called} "
            f"{driver.baseline:.4g}) {effect}")


def comparison_markdown(result: ComparisonResult, charts: Sequence[tuple[str, str]] = ()
                        ) -> str:
    """A before/after report for a pull request: table, then plain-words findings."""
    verdict = "PASSED" if result.passed else "FAILED"
    ci = f"{result.settings['confidence']:.0%}"
    has_ci = "delta_share_low" in result.table.columns
    lines = [
        f"# sensaudit compare: {verdict}",
        "",
        f"- Old model: {markdown_code(result.old.model_path)}",
        f"- New model: {markdown_code(result.new.model_path)}",
        f"- Data: {markdown_code(result.new.data_path)}, {result.new.rows:,} rows, the same for "
        "both",
        "",
        "## Findings",
        "",
    ]
    lines += [f"- {markdown_line(text)}" for text in result.findings]
    lines += ["", "## Before and after", ""]
    settings = result.settings
    if has_ci:
        lines += [f"Changes are in share points. Intervals ({ci}): {noise_name(settings)}"
                  + (f", from a paired bootstrap over rows ({settings['bootstrap_samples']} "
                     f"replicates, seed {settings['seed']})" if settings["bootstrap_samples"]
                     else "")
                  + (f", and the spread of {len(settings['old_replicas'])} + "
                     f"{len(settings['new_replicas'])} retrained copies of the old and new "
                     "model" if settings.get("noise") == "rows and retraining" else "")
                  + f". A change is marked (*) only when its interval excludes zero and it is "
                  f"at least {settings['min_change']:g} points (compare.min_change)."
                  + (" Retraining noise is not measured: two trainings of the same model "
                     "differ by more than this; compare with retrained copies "
                     "(--old-replica / --new-replica) to include it."
                     if settings.get("noise") == "rows" else ""), ""]
    if "status" in result.table.columns:
        lines += [INPUTS_NOTE, ""]
    for output, group in result.table.groupby("output", sort=False):
        if len(result.new.outputs) > 1:
            lines += [f"### Output {markdown_code(output)}", ""]
        lines += ["| feature | share old | share new | change (points) | "
                  + (f"{ci} interval | " if has_ci else "") + "rank old -> new | gate |",
                  "|---|---:|---:|---:|" + ("---:|" if has_ci else "") + "---|---|"]
        for r in group.itertuples():
            status = input_status(r)
            if status != "common":  # one model does not take it: no change to measure
                change, interval = status, "| " if has_ci else ""
            else:
                change = f"{r.delta_share * 100:+.1f}" + (" *" if r.changed else "")
                interval = (f"{r.delta_share_low * 100:+.1f} to "
                            f"{r.delta_share_high * 100:+.1f} | " if has_ci else "")
            gate = gate_change(r.flagged_old, r.flagged_new)
            lines.append(f"| {markdown_name(r.feature)} | {share_cell(r.share_old)} | "
                         f"{share_cell(r.share_new)} | {change} | {interval}{rank_move(r)} | "
                         f"{gate} |")
        lines.append("")
        rows = result.overall[output].least_agreeing_rows
        if rows:
            lines += ["Rows where the two models disagree most about what drives the score:",
                      "", "| id | score old | score new | cosine |", "|---|---:|---:|---:|"]
            lines += [f"| {markdown_name(c.id)} | {c.score_old:.4g} | {c.score_new:.4g} | "
                      f"{c.cosine:.3f} |" for c in rows]
            lines.append("")
    lines += _chart_links(charts)
    lines.append(f"<sub>sensaudit {__version__}</sub>")
    return "\n".join(lines) + "\n"


def _chart_links(charts: Sequence[tuple[str, str]]) -> list[str]:
    if not charts:
        return []
    # Titles quote output names; file names are slugs (charts.py).
    return ["## Charts", "", *[f"![{markdown_name(title)}]({name})\n" for name, title in charts]]
