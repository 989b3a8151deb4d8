"""JSON summaries CI jobs read: summary.json for an audit, comparison.json for a compare.

Strict JSON: NaN and infinity become null, numpy scalars plain numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

import pandas as pd

from sensaudit._version import __version__
from sensaudit.checks.base import Gate, Notice
from sensaudit.reports.base import ReportWriter
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import ComparisonResult


class JsonReport(ReportWriter):
    format = "json"

    def audit(self, result: AuditResult) -> None:
        self.out.write_text("summary.json", _dumps(_json_safe(audit_summary(result))))

    def comparison(self, result: ComparisonResult) -> None:
        self.out.write_text("comparison.json", _dumps(comparison_summary(result)))


def gate_record(gate: Gate) -> dict[str, Any]:
    """A gate as JSON: what it tested, its figures, and the limit."""
    return {"feature": gate.subject, "output": gate.output, **gate.details, "limit": gate.limit}


def notice_record(notice: Notice) -> dict[str, Any]:
    return {"feature": notice.subject, "output": notice.output, **notice.details}


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, allow_nan=False) + "\n"


def audit_summary(result: AuditResult) -> dict[str, Any]:
    """The JSON summary CI jobs read: verdict, flags, counts and where the inputs came from."""
    table = result.table
    summary = {
        "sensaudit_version": __version__,
        "passed": result.passed,
        "flags": [gate_record(g) for g in result.gates.flags],
        "warnings": [notice_record(w) for w in result.gates.warnings],
        "rows": result.rows,
        "rows_dropped": result.rows_dropped,
        "nonfinite_gradient_rows": result.nonfinite_rows,
        "nonfinite_gradient_ids": [_plain(i) for i in result.nonfinite_ids],
        "model": {"path": result.model_path, "format": result.model_format},
        "data": {"path": result.data_path},
        "features": result.features,
        "outputs": result.outputs,
        "mean_score": {k: _finite(v) for k, v in result.mean_scores.items()},
        "method": {key: result.method_details[key] for key in
                   ("name", "measures", "per_unit", "baseline", "parameters")
                   if key in result.method_details},
        "ranking": {output: group.sort_values("rank")[["feature", "share", "rank"]]
                    .assign(share=lambda g: g["share"].map(_finite)).to_dict("records")
                    for output, group in table.groupby("output", sort=False)},
    }
    # Each check's own keys (``robustness``: [...], ``suspects``), beside the core keys, never
    # over them.
    for check in result.checks:
        for key, value in check.summary.items():
            if key in summary:
                raise ValueError(f"check {check.check} writes summary.json key '{key}', "
                                 "which is taken")
            summary[key] = value
    return summary


def comparison_summary(result: ComparisonResult) -> dict[str, Any]:
    """comparison.json: the verdict, the overall figures per output, and every feature's."""
    outputs = {name: agreement.as_dict() for name, agreement in result.overall.items()}
    summary: dict[str, Any] = _json_safe({  # a dict in, a dict out
        "sensaudit_version": __version__,
        "passed": result.passed,
        "old": {"path": result.old.model_path, "format": result.old.model_format,
                "passed": result.old.passed},
        "new": {"path": result.new.model_path, "format": result.new.model_format,
                "passed": result.new.passed},
        "data": {"path": result.new.data_path, "rows": result.new.rows,
                 "rows_dropped": result.new.rows_dropped},
        "flags_new": [gate_record(g) for g in result.new.gates.flags],
        "proxy_increases": [asdict(increase) for increase in result.proxy_increases],
        "settings": result.settings,
        # With one output, its figures sit at the top level too: spearman, kendall_tau, ...
        **(outputs[result.new.outputs[0]] if len(outputs) == 1 else {}),
        "outputs": outputs,
        "features": result.table.to_dict("records"),
        "findings": result.findings,
    })
    return summary


def _json_safe(value: Any) -> Any:
    """NaN/inf become null and numpy scalars plain numbers, so the JSON is strict."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is pd.NA:  # a rank of a model that does not take the feature (compare)
        return None
    value = _plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
