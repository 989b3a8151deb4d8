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
from collections.abc import Iterable, Sequence
from html import escape

import pandas as pd

from sensaudit._version import __version__
from sensaudit.reports.base import ReportWriter
from sensaudit.reports.charts import ChartPlan, audit_plans, comparison_plans
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import INPUTS_NOTE, ComparisonResult, gate_change
from sensaudit.results.gate_text import figures, subject

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:60rem;padding:0 1rem;color:#1d1d1d}
h1{font-size:1.6rem;margin-bottom:.3rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
.passed{color:#1b7a31}.failed{color:#c62828}
table{border-collapse:collapse;margin:.5rem 0;font-size:13px}
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
    verdict = "PASSED" if result.passed else "FAILED"
    multi = len(result.outputs) > 1
    body = [f'<h1>sensaudit: <span class="{verdict.lower()}">{verdict}</span></h1>',
            _meta([("Model", f"{result.model_path} ({result.model_format})"),
                   ("Data", f"{result.data_path}, {result.rows:,} rows audited"
                    + (f", {result.rows_dropped:,} dropped for missing values"
                       if result.rows_dropped else "")),
                   ("Features", str(len(result.features))),
                   ("Outputs", ", ".join(result.outputs))]),
            "<h2>Findings</h2>", _list(t.replace("**", "") for t in result.findings)]
    if result.nonfinite_rows:
        body.append(f"<p>{result.nonfinite_rows:,} rows gave non-finite scores or gradients; "
                    f"first ids: {escape(', '.join(map(str, result.nonfinite_ids)))}.</p>")
    gates = [[g.check, subject(g, multi), "passed" if g.passed else "FAILED", g.limit,
              figures(g.details)] for g in result.gates.all]
    if gates:
        body += ["<h2>Gates</h2>",
                 _table(["check", "subject", "result", "limit", "figures"], gates,
                        text={0, 1, 2, 3, 4}, failed=[not g.passed for g in result.gates.all])]
    body += ["<h2>Charts</h2>", *map(_figure, audit_plans(result))]
    body += ["<h2>Feature sensitivity</h2>",
             "<p>As in sensitivity.csv: <code>share</code> is each feature's part of the total "
             "scaled sensitivity (std x mean |gradient|).</p>",
             _frame(result.table, failed=result.table["flagged"].tolist())]
    if result.examples:
        rows = [[str(e.id), e.output, _num(e.score), "" if e.label is None else _num(e.label),
                 ", ".join(f"{d.feature} ({d.contribution:+.3g})" for d in e.drivers)]
                for e in result.examples]
        body += ["<h2>Examples to look at</h2>",
                 _table(["id", "output", "score", "label", "top drivers (contribution)"], rows,
                        text={0, 1, 4})]
    return _page(f"sensaudit: {verdict}", body)


def comparison_html(result: ComparisonResult) -> str:
    verdict = "PASSED" if result.passed else "FAILED"
    table = result.table.copy()
    table["gate"] = [gate_change(o, n) for o, n in zip(table["flagged_old"],
                                                       table["flagged_new"], strict=True)]
    body = [f'<h1>sensaudit compare: <span class="{verdict.lower()}">{verdict}</span></h1>',
            _meta([("Old model", result.old.model_path), ("New model", result.new.model_path),
                   ("Data", f"{result.new.data_path}, {result.new.rows:,} rows, the same for "
                            "both")]),
            "<h2>Findings</h2>", _list(result.findings),
            "<h2>Charts</h2>", *map(_figure, comparison_plans(result)),
            "<h2>Before and after</h2>", "<p>As in comparison.csv.</p>",
            *([f"<p>{escape(INPUTS_NOTE)}</p>"] if "status" in table.columns else []),
            _frame(table, failed=table["flagged_new"].tolist())]
    return _page(f"sensaudit compare: {verdict}", body)


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
    return "<ul>" + "".join(f"<li>{escape(t)}</li>" for t in texts) + "</ul>"


def _frame(frame: pd.DataFrame, *, failed: Sequence[bool] | None = None, css: str = "",
           chart: str | None = None) -> str:
    """A DataFrame as a table, numbers written as in the CSV files (%.8g)."""
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])
            or frame[c].dtype == bool]
    rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
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
           failed: Sequence[bool] | None = None) -> str:
    head = "".join(f'<th class="{"text" if i in text else "num"}">{escape(h)}</th>'
                   for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = ' class="fail"' if failed is not None and failed[r] else ""
        cells = "".join(f'<td class="{"text" if i in text else "num"}">{escape(v)}</td>'
                        for i, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


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
