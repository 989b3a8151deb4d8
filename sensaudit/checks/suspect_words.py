"""The suspects check in words: the reasons behind a candidate, the limit a suspect broke, its
record in summary.json, the check's result (gates, warnings, findings, tables) and the report's
"Suspected proxies" section (:mod:`sensaudit.checks.suspects` decides; this says)."""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
import pandas as pd

from sensaudit.checks.base import CheckResult, Gate, Notice
from sensaudit.checks.proxy_harm import Harm
from sensaudit.checks.tie_shift import TieShift
from sensaudit.core.text_safety import markdown_name


class Limits(Protocol):
    """The options a suspect's limit quotes (SuspectsOptions has them)."""

    @property
    def min_gap(self) -> float: ...

    @property
    def min_contrast(self) -> float: ...

    @property
    def harm_level(self) -> float: ...

    @property
    def tie_level(self) -> float: ...


def limit_text(r: Any, opts: Limits, dominance: float) -> str:
    """The rule a suspect broke, as a limit: its share within the label's support (plus
    min_gap), and no larger on the misscored rows."""
    parts = []
    if math.isfinite(r.evidence_high):
        parts.append(f"share below {r.evidence_high + opts.min_gap:.1%} (the label's "
                     f"support at most {r.evidence_high:.1%}, plus {opts.min_gap * 100:g} "
                     "points)")
    if math.isfinite(r.contrast):
        parts.append(f"no more than {opts.min_contrast * 100:g} points larger on misscored "
                     "rows")
    if not parts:
        parts.append(f"share at most {dominance:.0%} (audit.dominance_warning)")
    limit = "for a feature nobody declared: " + " and ".join(parts)
    # With the training rows the tie's fall decides; without them, the loss-change test.
    if bool(r.tie_fell):
        limit += (", or a tie to the label on these rows like the training rows' (a "
                  f"one-sided test at {opts.tie_level:g})")
    elif bool(r.confirmed):
        limit += (", or a model no better on these rows without it (a one-sided test at "
                  f"{opts.harm_level:.0%})")
    return limit + " (audit.fail_on_suspects)"


def reasons_for(r: Any, contrast: dict[str, Any] | None, opts: Limits, dominance: float,
                harm: Harm | None = None, on_probability: bool = False,
                tie: TieShift | None = None) -> list[str]:
    """The sentences behind a candidate: each signal it showed, then the tests' verdicts."""
    reasons = []
    if r.share - r.evidence_high >= opts.min_gap:
        reasons.append(f"relied on beyond its evidence: {r.share:.1%} of the model's "
                       f"sensitivity against {r.evidence_share:.1%} of the label's fit on "
                       f"these rows (at most {r.evidence_high:.1%})")
    elif r.reliance_gap >= opts.min_gap:
        reasons.append(f"relied on more than its evidence: {r.share:.1%} of the "
                       f"sensitivity against {r.evidence_share:.1%} of the label's fit "
                       f"({points(r.reliance_gap)})")
    if contrast is not None and r.contrast_low > 0 and r.contrast >= opts.min_contrast:
        reasons.append(f"larger on misscored rows: {r.share_misscored:.1%} of the "
                       f"sensitivity on the {contrast['misscored_rows']:,} misscored rows "
                       f"against {r.share_rest:.1%} on the rest ({points(r.contrast)}, "
                       f"interval {r.contrast_low * 100:+.1f} to {points(r.contrast_high)})")
    if r.dominant:
        reasons.append(f"dominant: {r.share:.1%} of the sensitivity, over "
                       f"audit.dominance_warning ({dominance:.0%})")
    fell = tie is not None and tie.fell
    if harm is not None and harm.confirmed:
        reasons.append(harm.reason(on_probability))
    elif harm is not None and harm.unjudged and not fell:
        reasons.append(harm.cannot_judge(on_probability))
    if tie is not None and tie.fell:
        reasons.append(tie.reason())
    if tie is not None and not fell and harm is not None and harm.confirmed:
        reasons.append(tie.kept_reason())
    elif ((harm is not None and harm.confirmed) or fell) and r.evidence_low > 0:
        reasons.append(f"but the label follows it on these rows: at least "
                       f"{r.evidence_low:.1%} of the label's fit (the interval's lower "
                       "end), so the model over-relies on a feature with evidence "
                       "rather than leaning on a proxy")
    return reasons


def check_result(name: str, *, table: pd.DataFrame, status: dict[str, str], fail: bool | None,
                 options: Limits, dominance: float, multi: bool) -> CheckResult:
    """The check's result from its judged table: each suspect a failed gate or a warning
    (``fail``: audit.fail_on_suspects), the candidates it cannot judge and the over-relied
    features warnings, their findings, suspects.csv, summary.json's lists and the report's
    section (``multi``: the model has several outputs)."""
    result = CheckResult(name)
    suspects = table[table["suspect"]]
    for r in suspects.itertuples():
        details = record(r)
        # By default only a suspect whose tie to the label fell from the training rows
        # fails the audit: no genuine feature was flagged that way on the benchmark, while
        # the audited rows' own signals flagged one in about 1 run in 600.
        if fail or (fail is None and r.tie_fell):
            result.gates.append(Gate(check=name, subject=r.feature, output=r.output,
                                     passed=False,
                                     limit=limit_text(r, options, dominance),
                                     details=details))
        else:
            result.warnings.append(Notice(check=name, subject=r.feature,
                                          output=r.output, details=details))
        where = f" for output '{r.output}'" if multi else ""
        result.findings.append(
            f"**{r.feature}** is a suspected proxy{where}: " + "; ".join(r.reasons) + ". "
            "Nobody declared it. If it should not decide the score, declare it in "
            "audit.proxies and remove its tie to the label from the training data "
            f"(`sensaudit resample TRAIN.csv --proxy {r.feature} --label LABEL --out "
            "resampled.csv`), retrain, and compare.")
    for r in table[table["unjudged"]].itertuples():
        # Not a suspect and not cleared: a warning, so the terminal says it too.
        result.warnings.append(Notice(check=name, subject=r.feature, output=r.output,
                                      details={**record(r, "power"), "unjudged": True}))
        where = f" for output '{r.output}'" if multi else ""
        result.findings.append(f"**{r.feature}**{where} may be a proxy that this audit "
                               "cannot judge: " + "; ".join(r.reasons) + ".")
    for r in table[table["over_relied"]].itertuples():
        result.warnings.append(Notice(check=name, subject=r.feature, output=r.output,
                                      details={**record(r), "over_relied": True}))
        where = f" for output '{r.output}'" if multi else ""
        result.findings.append(f"**{r.feature}**{where} is over-relied, not a proxy: "
                               + "; ".join(r.reasons) + ". Check it for over-fitting (a "
                               "simpler model, more training rows, or a copy of another "
                               "feature splitting its weight).")
    not_run = {k: v for k, v in status.items() if v.startswith("not run")}
    if not_run:
        result.notes.append("Suspected proxies: " + "; ".join(
            f"{k.replace('_', ' ')} {v}" for k, v in not_run.items()) + ".")
    # evidence_limit: the share over which a feature is suspected on its evidence alone.
    result.tables["suspects.csv"] = table.assign(
        reasons=table["reasons"].map(" | ".join),
        evidence_limit=table["evidence_high"] + options.min_gap)
    result.summary["suspects"] = [record(r) for r in suspects.itertuples()]
    result.summary["unjudged_candidates"] = [record(r, "power")
                                             for r in table[table["unjudged"]].itertuples()]
    result.summary["over_relied"] = [record(r)
                                     for r in table[table["over_relied"]].itertuples()]
    result.summary["suspect_signals"] = status
    result.sections["Suspected proxies"] = section_lines(
        suspects, table[table["declared_with_signs"]], table[table["unjudged"]],
        table[table["over_relied"]], status)
    return result


def section_lines(suspects: pd.DataFrame, declared: pd.DataFrame, unjudged: pd.DataFrame,
                  over_relied: pd.DataFrame, status: dict[str, str]) -> list[str]:
    """The report's "Suspected proxies" section: what ran, declared proxies showing the same
    signs, candidates the audit cannot judge, over-relied features, then the suspects'
    table."""
    lines = ["Features nobody declared that the model leans on more than the data justify "
             "(docs/checks/suspects.md).", ""]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in status.items()]
    # Feature and output names come from the data: escaped for markdown (text_safety).
    lines += [f"- {markdown_name(r.feature)} is a declared proxy, judged by its limits; it "
              f"shows the same signs: {'; '.join(r.reasons)}." for r in declared.itertuples()]
    lines += [f"- {markdown_name(r.feature)} may be a proxy that this audit cannot judge: "
              f"{'; '.join(r.reasons)}." for r in unjudged.itertuples()]
    lines += [f"- {markdown_name(r.feature)} is over-relied, not a proxy: "
              f"{'; '.join(r.reasons)}." for r in over_relied.itertuples()]
    lines.append("")
    if suspects.empty:
        lines.append("No undeclared feature is suspected.")
        return lines
    lines += ["| feature | output | share | label's support | misscored / rest | reasons |",
              "|---|---|---:|---:|---:|---|"]
    for r in suspects.itertuples():
        support = "" if np.isnan(r.evidence_share) else f"{r.evidence_share:.1%}"
        split = ("" if np.isnan(r.contrast)
                 else f"{r.share_misscored:.1%} / {r.share_rest:.1%}")
        lines.append(f"| {markdown_name(r.feature)} | {markdown_name(r.output)} | "
                     f"{r.share:.1%} | {support} | {split} | " + "; ".join(r.reasons) + " |")
    return lines


def record(r: Any, *extra: str) -> dict[str, Any]:
    """A suspect as summary.json lists it: feature, reasons, then the figures (and the
    ``extra`` ones named), None where not measured (JSON has no NaN)."""
    entry: dict[str, Any] = {"feature": r.feature, "output": r.output,
                             "reasons": list(r.reasons)}
    for key in ("share", "evidence_share", "evidence_low", "evidence_high", "reliance_gap",
                "share_misscored", "share_rest", "contrast", "contrast_low", "contrast_high",
                "score", "loss", "loss_change", "loss_change_low", "loss_change_high",
                "predicted_by_others", "train_tie", "audit_tie", "tie_z", "tie_p", *extra):
        value = float(getattr(r, key))
        entry[key] = value if math.isfinite(value) else None
    entry["dominant"] = bool(r.dominant)
    return entry


def points(fraction: float) -> str:
    """A change of a share in percentage points: "+4.1 points"."""
    return f"{fraction * 100:+.1f} points"
