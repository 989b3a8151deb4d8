"""From merged read-pass sums to the audit's result: the features' standard deviations checked
usable, each model's ranked sensitivity table, its checks' verdicts, and the AuditResult the
reports render."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from sensaudit.checks.base import CheckResult, Ranking
from sensaudit.core.errors import DataError, ModelError
from sensaudit.inputs.table_layout import Table
from sensaudit.methods.base import AttributionMethod
from sensaudit.pipeline.baselines import Reference, baseline_labels, describe_baseline
from sensaudit.pipeline.examples import ExampleDrivers
from sensaudit.pipeline.groups import add_group_rows
from sensaudit.pipeline.integer_precision import integer_warnings
from sensaudit.pipeline.model_ready import precision_warnings
from sensaudit.pipeline.pass_state import ModelPass, ReadPass
from sensaudit.results.audit_result import AuditResult, sensitivity_table
from sensaudit.settings.sections import AuditSettings
from sensaudit.stats.accumulators import FeatureMoments
from sensaudit.stats.label_correlation import LabelTies


def feature_std(moments: FeatureMoments, table: Table) -> torch.Tensor:
    """The features' standard deviations over every row read, checked usable."""
    std = moments.std
    if not bool((std > 0).any()):
        # No verdict on nothing: with no feature varying, every share would be 0 and every
        # feature rank alike, and a proxy limit would pass for lack of evidence.
        raise DataError(f"{table.path}: every feature is constant over the "
                        f"{moments.count:,} rows read, so no feature can be ranked by how "
                        "much it moves the score; audit rows where the features vary")
    return checked_std(std, table)


def checked_std(std: torch.Tensor, table: Table) -> torch.Tensor:
    # Values near float64's limit (1e154 and up) overflow the variance, and an infinite std
    # would make every share NaN.
    overflow = (~torch.isfinite(std)).nonzero().flatten().tolist()
    if overflow:
        raise DataError(f"{table.path}: column '{table.features[overflow[0]]}' has values too "
                        "large to measure how much it varies (its variance overflows); rescale "
                        "it")
    return std


def rank_model(model_pass: ModelPass, table: Table, std: torch.Tensor,
               method: AttributionMethod, settings: AuditSettings | None = None,
               training: LabelTies | None = None) -> Ranking:
    """One model's merged sums as the ranked sensitivity table (with ``settings.groups``);
    ``training``: the label's ties on the training rows, for the checks (Ranking.training)."""
    sums, loaded = model_pass.sums, model_pass.prepared.loaded
    if sums.rows == 0 and sums.nonfinite_rows:
        # Even under audit.allow_nonfinite, 0 rows audited leaves nothing to rank.
        ids = ", ".join(map(str, sums.nonfinite_ids[:5]))
        raise ModelError(f"{loaded.path}: the model gave non-finite scores or gradients on all "
                         f"{sums.nonfinite_rows:,} rows (first ids: {ids}), so there is nothing "
                         "to rank")
    if sums.rows and not bool((sums.sum_abs > 0).any()):
        raise ModelError(f"{loaded.path}: every gradient is exactly zero on all {sums.rows:,} rows:"
                         " the score does not respond to any feature (a step function, rounding,"
                         " or a constant output?), so there is nothing to rank")
    features, outputs = list(table.features), model_pass.prepared.outputs
    ranked = sensitivity_table(sums, features, outputs, std, per_unit=method.per_unit)
    for output, group in ranked.groupby("output", sort=False):
        if not bool((group["scaled_sensitivity"] > 0).any()):
            raise ModelError(f"{loaded.path}: output '{output}' responds only to features that "
                             "do not vary in the data (every share is 0), so nothing can be "
                             "ranked; audit rows where those features vary")
    if settings is not None and settings.groups:
        ranked = add_group_rows(ranked, settings.groups)
    return Ranking(table=ranked, features=features, outputs=outputs,
                   per_unit=method.per_unit, model=model_pass.prepared.module,
                   device=loaded.device, dtype=loaded.dtype, training=training)


def judge_model(model_pass: ModelPass, ranking: Ranking, std: torch.Tensor,
                integer_max: torch.Tensor | None = None
                ) -> tuple[pd.DataFrame, list[CheckResult]]:
    """Let one model's checks judge its ranking; mark the table's rows whose gate failed.
    ``integer_max``: the integer columns' largest |value| (FeatureSummary), to warn where the
    model's dtype rounds them."""
    ranked = ranking.table
    results = [check.finish(ranking) for check in model_pass.checks]
    dtype = model_pass.prepared.loaded.dtype
    named: set[str] = set()
    if integer_max is not None:
        integers = integer_warnings(ranking.features, integer_max, dtype)
        named = {w.subject for w in integers.warnings}
        if integers.warnings:
            results.append(integers)
    if model_pass.seen is not None:
        spread = precision_warnings(ranking.features, std, model_pass.seen.std, dtype)
        # One line per column: the integer warning already says why its spread is lost.
        spread.warnings = [w for w in spread.warnings if w.subject not in named]
        spread.findings = [f for f in spread.findings
                           if not any(f.startswith(f"**{n}**") for n in named)]
        results.append(spread)
    failed = {(g.output, g.subject) for r in results for g in r.failed}
    ranked["flagged"] = [(o, f) in failed
                         for o, f in zip(ranked["output"], ranked["feature"], strict=True)]
    return ranked, results


def audit_result(model_pass: ModelPass, ranked: pd.DataFrame, checks: list[CheckResult],
                 drivers: ExampleDrivers, read: ReadPass, table: Table,
                 settings: AuditSettings, method: AttributionMethod,
                 notes: list[str], method_details: dict[str, Any] | None = None, *,
                 examples_streamed: bool = True) -> AuditResult:
    sums, prepared = model_pass.sums, model_pass.prepared
    # The report shows the examples of the outputs with a failed gate first.
    failed = {gate.output for check in checks for gate in check.failed}
    outputs = sorted(prepared.outputs, key=lambda o: o not in failed)
    return AuditResult(
        table=ranked, checks=checks, examples=drivers.best_first(outputs),
        features=list(table.features), outputs=prepared.outputs, rows=sums.rows,
        rows_dropped=read.dropped, nonfinite_rows=sums.nonfinite_rows,
        nonfinite_ids=sums.nonfinite_ids, nonfinite_allowed=settings.allow_nonfinite,
        model_path=str(prepared.loaded.path), model_format=prepared.loaded.format,
        data_path=str(table.path), proxies=[p.feature for p in settings.proxies],
        mean_scores={o: float(s) for o, s in zip(prepared.outputs,
                                                 sums.score_sum / max(sums.rows, 1), strict=True)},
        method=method.name, notes=notes, contributions=drivers.contributions(),
        method_details=method_details or {}, examples_streamed=examples_streamed)


def method_details(method: AttributionMethod, settings: AuditSettings, baseline: torch.Tensor,
                   reference: Reference, features: tuple[str, ...]) -> dict[str, Any]:
    """What summary.json and report.md say about the method: its name, what it measures,
    its units, the baseline (with the words each feature's baseline is called) and its
    parameters."""
    return {"name": method.name, "measures": method.description, "per_unit": method.per_unit,
            "baseline": describe_baseline(settings.baseline, baseline, features, reference),
            "baseline_labels": dict(zip(features, baseline_labels(settings.baseline,
                                                                   features), strict=True)),
            "parameters": method.parameters()}


def skipped_note(table: Table) -> list[str]:
    if not table.skipped:
        return []
    return [f"Columns left out of the features as text: {', '.join(table.skipped)} (list "
            "them in data.features or model.features if the model takes them)."]
