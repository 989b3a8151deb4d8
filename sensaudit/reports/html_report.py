"""A self-contained HTML report (the ``charts`` extra): report.html for an audit,
comparison.html for a compare.

One file to attach to a ticket or open from a CI artifact: the charts are embedded as data URIs,
the styles inline, and there is no script and no link to anything outside the file (its
Content-Security-Policy forbids loading anything but the embedded images). Under each chart
the numbers it draws are printed, from the same tables as the CSV files.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable, Sequence
from html import escape

import pandas as pd

from sensaudit._version import __version__
from sensaudit.core.text_safety import visible
from sensaudit.reports.base import ReportWriter
from sensaudit.reports.charts import ChartPlan, audit_plans, comparison_plans
from sensaudit.reports.markdown_report import is_share_column, method_sentence, verdict_counts
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import INPUTS_NOTE, ComparisonResult, gate_change
from sensaudit.results.gate_text import figures, subject

# The page fits a 1280 px window: the body is at most 72rem (1152 px) wide, tables never wider
# than it (long text wraps, anywhere if it must), images scaled down to it.
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:72rem;padding:0 1rem;color:#1d1d1d}
h1{font-size:1.6rem;margin-bottom:.3rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
.passed{color:#1b7a31}.failed{color:#c62828}
table{border-collapse:collapse;margin:.5rem 0;font-size:13px;max-width:100%}
td.text{overflow-wrap:anywhere;min-width:6em}td.long{min-width:14em}li,p{overflow-wrap:anywhere}
th,td{border:1px solid #ddd;padding:.2rem .5rem;text-align:right}
th{background:#f4f4f4}td.text,th.text{text-align:left}
tr.fail td{background:#fdecea}figure{margin:1rem 0}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:13px}details{margin:.3rem 0 1rem}
.meta{color:#444}code{background:#f4f4f4;padding:0 .2rem}.wide{overflow-x:auto}
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class HtmlReport(ReportWriter):
    format = "html"
    requires = ("matplotlib",)
    extra = "charts"

    def audit(self, result: AuditResult) -> None:
        self.out.write_text("report.html", audit_html(result))

    def comparison(self, result: ComparisonResult) -> None:
        self.out.write_text("comparison.html", comparison_html(result))


def audit_html(result: AuditResult) -> str:
    """Everything report.md holds (method, findings, gates, each check's sections and tables,
    the sensitivity table, examples), with the charts embedded; shares in %."""
    verdict = "PASSED" if result.passed else "FAILED"
    multi = len(result.outputs) > 1
    method = method_sentence(result)
    body = [f'<h1>sensaudit: <span class="{verdict.lower()}">{verdict}</span></h1>',
            f"<p>{escape(verdict_counts(result))}</p>",
            _meta([("Model", f"{result.model_path} ({result.model_format})"),
                   ("Data", f"{result.data_path}, {result.rows:,} rows audited"
                    + (f", {result.rows_dropped:,} dropped for missing values"
                       if result.rows_dropped else "")),
                   ("Features", str(len(result.features))),
                   ("Outputs", ", ".join(result.outputs))]),
            *([f"<p>{_md_inline(method)}</p>"] if method else []),
            "<h2>Findings</h2>", _list(t.replace("**", "") for t in result.findings)]
    if result.nonfinite_rows:
        body.append(f"<p>{result.nonfinite_rows:,} rows gave non-finite scores or gradients; "
                    f"first ids: {escape(', '.join(map(str, result.nonfinite_ids)))}.</p>")
    gates = [[g.check, subject(g, multi), "passed" if g.passed else "FAILED", g.limit,
              figures(g.details)] for g in result.gates.all]
    if gates:
        body += ["<h2>Gates</h2>",
                 _table(["check", "subject", "result", "limit", "figures"], gates,
                        text={0, 1, 2, 3, 4}, long={3, 4},
                        failed=[not g.passed for g in result.gates.all])]
    for check in result.checks:
        for title, section in check.sections.items():
            body += [f"<h2>{escape(title)}</h2>", _markdown_html(section)]
    body += ["<h2>Feature sensitivity</h2>", f"<p>{escape(_share_meaning(result))}</p>"]
    for output, group in result.table.groupby("output", sort=False):
        if multi:
            body.append(f"<h3>Output <code>{escape(str(output))}</code></h3>")
        rows = group if "group" in group.columns else group.sort_values("rank")
        body.append(_frame(_sensitivity_view(rows, result.per_unit),
                           failed=rows["flagged"].tolist()))
    for check in result.checks:
        for title, frame in check.report_tables.items():
            body += [f"<h2>{escape(title)}</h2>", _frame(frame)]
    body += ["<h2>Charts</h2>", *map(_figure, audit_plans(result))]
    if result.examples:
        rows = [[str(e.id), e.output, _num(e.score), "" if e.label is None else _num(e.label),
                 ", ".join(f"{d.feature} ({d.contribution:+.3g})" for d in e.drivers)]
                for e in result.examples]
        body += ["<h2>Examples to look at</h2>",
                 f"<p>{escape(_contribution_meaning(result))} All rows are in examples.csv.</p>",
                 _table(["id", "output", "score", "label", "top drivers (contribution)"], rows,
                        text={0, 1, 4}, long={4})]
    return _page(f"sensaudit: {verdict}", body)


def _share_meaning(result: AuditResult) -> str:
    if result.per_unit:
        return ("As in sensitivity.csv: share is each feature's part of the total scaled "
                "sensitivity (std x mean |gradient|: the typical score change for a "
                "one-standard-deviation change), in %.")
    return ("As in sensitivity.csv: share is each feature's part of the total mean "
            "|attribution| (score units), in %.")


def _contribution_meaning(result: AuditResult) -> str:
    if result.per_unit:
        return ("Contribution: gradient x (value - baseline), the score change the feature "
                "accounts for at the row, to first order (score units).")
    return (f"Contribution: the {result.method} attribution, the part of the score's change "
            "from the baseline the feature accounts for (score units).")


def _sensitivity_view(rows: pd.DataFrame, per_unit: bool) -> pd.DataFrame:
    """The columns report.md shows, in its order (the CSV has them all)."""
    names = ["rank", "feature", "share"]
    names += (["scaled_sensitivity", "mean_gradient", "mean_abs_gradient"] if per_unit
              else ["mean_abs_attribution", "mean_attribution"])
    names += ["std", "flagged"]
    view = rows[[c for c in names if c in rows.columns]].copy()
    view["flagged"] = ["yes" if f else "" for f in rows["flagged"]]
    view.columns = [c.replace("_", " ") for c in view.columns]
    if "group" in rows.columns:
        view["feature"] = [f"{f} (group)" if g == f else f
                           for f, g in zip(rows["feature"], rows["group"], strict=True)]
    return view.reset_index(drop=True)


def comparison_html(result: ComparisonResult) -> str:
    """What comparison.md holds, with the chart embedded: shares in %, changes in points."""
    verdict = "PASSED" if result.passed else "FAILED"
    multi = len(result.new.outputs) > 1
    has_ci = "delta_share_low" in result.table.columns
    body = [f'<h1>sensaudit compare: <span class="{verdict.lower()}">{verdict}</span></h1>',
            _meta([("Old model", result.old.model_path), ("New model", result.new.model_path),
                   ("Data", f"{result.new.data_path}, {result.new.rows:,} rows, the same for "
                            "both")]),
            "<h2>Findings</h2>", _list(result.findings),
            "<h2>Before and after</h2>",
            "<p>As in comparison.csv. Changes are in share points; * marks a change "
            + ("whose interval excludes zero and that is " if has_ci else "")
            + f"at least {result.settings['min_change']:g} points (compare.min_change).</p>",
            *([f"<p>{escape(INPUTS_NOTE)}</p>"] if "status" in result.table.columns else [])]
    for output, group in result.table.groupby("output", sort=False):
        if multi:
            body.append(f"<h3>Output <code>{escape(str(output))}</code></h3>")
        header = ["feature", "share old", "share new", "change (points)"]
        header += [f"{result.settings['confidence']:.0%} interval"] if has_ci else []
        header += ["rank old -> new", "gate"]
        rows = []
        for r in group.itertuples():
            # A feature only one model takes: its figures on that side, its status as change.
            status = getattr(r, "status", "common")
            row = [str(r.feature), _share(r.share_old), _share(r.share_new),
                   f"{r.delta_share * 100:+.1f}" + (" *" if r.changed else "")
                   if status == "common" else status]
            if has_ci:
                row.append(f"{r.delta_share_low * 100:+.1f} to {r.delta_share_high * 100:+.1f}"
                           if status == "common" else "")
            row += [f"{_rank(r.rank_old)} -> {_rank(r.rank_new)}",
                    gate_change(r.flagged_old, r.flagged_new)]
            rows.append(row)
        body.append(_table(header, rows, text={0, len(header) - 1},
                           failed=group["flagged_new"].tolist()))
        body += _least_agreeing(result, str(output))
    body += ["<h2>Charts</h2>", *map(_figure, comparison_plans(result))]
    return _page(f"sensaudit compare: {verdict}", body)


def _least_agreeing(result: ComparisonResult, output: str) -> list[str]:
    """comparison.md's rows where the two models disagree most, with its figures."""
    rows = result.overall[output].least_agreeing_rows
    if not rows:
        return []
    cells = [[visible(str(c.id)), f"{c.score_old:.4g}", f"{c.score_new:.4g}",
              f"{c.cosine:.3f}"] for c in rows]
    return ["<p>Rows where the two models disagree most about what drives the score:</p>",
            _table(["id", "score old", "score new", "cosine"], cells, text={0})]


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + f"\n<p class=\"meta\"><small>sensaudit {__version__}</small></p>\n"
              "</body>\n</html>\n")


def _figure(plan: ChartPlan) -> str:
    from sensaudit.reports.chart_render import png_bytes

    data = base64.b64encode(png_bytes(plan)).decode("ascii")
    return (f'<figure id="{escape(plan.name)}">\n'
            f'<img src="data:image/png;base64,{data}" alt="{escape(plan.title)}">\n'
            f"<figcaption>{escape(plan.caption)}</figcaption>\n</figure>\n"
            f"<details><summary>The numbers in this chart</summary>\n"
            + _frame(plan.data, css="chart-data", chart=plan.name) + "\n</details>")


def _meta(items: list[tuple[str, str]]) -> str:
    return "<ul class=\"meta\">" + "".join(
        f"<li>{escape(k)}: <code>{escape(v)}</code></li>" for k, v in items) + "</ul>"


def _list(texts: Iterable[str]) -> str:
    """Plain-text findings; a `command` in them shown as code."""
    items = (_CODE.sub(r"<code>\1</code>", escape(t)) for t in texts)
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


_CODE = re.compile(r"`([^`]+)`")


def _frame(frame: pd.DataFrame, *, failed: Sequence[bool] | None = None, css: str = "",
           chart: str | None = None) -> str:
    """A DataFrame as a table, numbers written as in the CSV files (%.8g)."""
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])
            or frame[c].dtype == bool]
    percent = [is_share_column(c) for c in frame.columns]
    rows = [[_percent(v) if p else _cell(v) for v, p in zip(row, percent, strict=True)]
            for row in frame.itertuples(index=False)]
    header = "".join(f'<th class="{"text" if c in text else "num"}">{escape(str(c))}</th>'
                     for c in frame.columns)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="fail"' if failed is not None and failed[i] else ""
        cells = "".join(f'<td class="{"text" if c in text else "num"}">{escape(v)}</td>'
                        for c, v in zip(frame.columns, row, strict=True))
        body.append(f"<tr{cls}>{cells}</tr>")
    attrs = (f' class="{css}"' if css else "") + (f' data-chart="{escape(chart)}"'
                                                  if chart else "")
    return (f'<div class="wide"><table{attrs}><thead><tr>{header}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _table(header: list[str], rows: list[list[str]], *, text: set[int],
           failed: Sequence[bool] | None = None, raw: bool = False,
           long: frozenset[int] | set[int] = frozenset()) -> str:
    """``text``: left-aligned columns; ``long``: columns of sentences, wrapped anywhere so
    the table fits the page; ``raw``: the cells are HTML already (escaped by the caller)."""
    def cell(v: str) -> str:
        return v if raw else escape(v)

    head = "".join(f'<th class="{"text" if i in text else "num"}">{cell(h)}</th>'
                   for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = ' class="fail"' if failed is not None and failed[r] else ""
        cells = "".join(f'<td class="{_kind(i, text, long)}">{cell(v)}</td>'
                        for i, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _kind(column: int, text: set[int], long: frozenset[int] | set[int]) -> str:
    return ("text long" if column in long else "text") if column in text else "num"


def _share(share: float) -> str:
    """A compare table's share to 0.1%; "-" on the side of a model that does not take it."""
    return "-" if pd.isna(share) else f"{share:.1%}"


def _rank(rank: object) -> str:
    return "-" if pd.isna(rank) else str(rank)


def _cell(value: object) -> str:
    if value is pd.NA:  # a rank of a model that does not take the feature (compare)
        return ""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else _num(value)
    if hasattr(value, "item"):  # numpy scalars
        return _cell(value.item())
    return str(value)


def _num(value: float) -> str:
    return f"{value:.8g}"


def _percent(value: object) -> str:
    """A share or rate as a percentage, to 0.01%."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):
            return _percent(value.item())
        return _cell(value)
    return "" if math.isnan(value) else f"{value * 100:.2f}%"


_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
_MARKUP = re.compile(r"(?<!\\)(\*\*|`)")


def _md_inline(text: str) -> str:
    """A line report.md holds, as HTML: its own markup (**bold**, `code`) dropped, the
    escapes markdown_name added undone, then everything escaped for HTML."""
    text = _MARKUP.sub("", text)
    text = re.sub(r"\\(.)", r"\1", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return escape(text)


def _markdown_html(lines: Sequence[str]) -> str:
    """A check's report.md section (paragraphs, "- " lists, pipe tables) as HTML."""
    out: list[str] = []
    items: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if items:
            out.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
            items.clear()
        if table:
            header, *rows = table
            # The last column of a section's table is its long text (the reasons).
            out.append(_table(header, rows, text=set(range(len(header))),
                              long={len(header) - 1}, raw=True))
            table.clear()

    for line in lines:
        if line.startswith("|"):
            cells = [c.strip() for c in _UNESCAPED_PIPE.split(line.strip())[1:-1]]
            if not all(set(c) <= set(":-") for c in cells):
                table.append([_md_inline(c) for c in cells])
            continue
        if line.startswith("- "):
            items.append(_md_inline(line[2:]))
            continue
        flush()
        if line.strip():
            out.append(f"<p>{_md_inline(line)}</p>")
    flush()
    return "\n".join(out)
