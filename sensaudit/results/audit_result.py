"""What an audit produces: the ranked sensitivity table, the checks' results, examples. No I/O.

:func:`sensitivity_table` turns merged attribution sums into the per-feature table every check
and report reads; :class:`AuditResult` gathers it with the check results for the writers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pandas as pd
import torch

from sensaudit.checks.base import CheckResult, Gate, Notice
from sensaudit.stats.accumulators import AttributionSums
from sensaudit.stats.row_sample import ContributionSample

SENSITIVITY_COLUMNS = ["output", "feature", "mean_gradient", "mean_abs_gradient", "rms_gradient",
                       "std", "scaled_sensitivity", "share", "rank", "flagged"]
# For methods whose attributions are in score units already (per_unit False): share and rank
# come from mean_abs_attribution; scaled_sensitivity repeats it, so every reader of the table
# (checks, compare) finds the typical score change under the same name for every method.
ATTRIBUTION_COLUMNS = ["output", "feature", "mean_attribution", "mean_abs_attribution",
                       "rms_attribution", "std", "scaled_sensitivity", "share", "rank", "flagged"]


def sensitivity_table(sums: AttributionSums, features: list[str], outputs: list[str],
                      std: torch.Tensor, per_unit: bool = True) -> pd.DataFrame:
    """Per (output, feature) statistics, ranked within each output (``flagged`` left False).

    per_unit: the attributions are gradients, scaled by the feature's std into score units
    (SENSITIVITY_COLUMNS); otherwise they are in score units already (ATTRIBUTION_COLUMNS).
    """
    rows = max(sums.rows, 1)
    mean = sums.sum / rows
    mean_abs = sums.sum_abs / rows
    rms = (sums.sum_sq / rows).sqrt()
    scaled = mean_abs * std if per_unit else mean_abs.clone()
    total = scaled.sum(1, keepdim=True)
    share = torch.where(total > 0, scaled / total, torch.zeros_like(scaled))
    frames = []
    kind = "gradient" if per_unit else "attribution"
    for i, output in enumerate(outputs):
        frame = pd.DataFrame({
            "output": output, "feature": features,
            f"mean_{kind}": mean[i].numpy(), f"mean_abs_{kind}": mean_abs[i].numpy(),
            f"rms_{kind}": rms[i].numpy(), "std": std.numpy(),
            "scaled_sensitivity": scaled[i].numpy(), "share": share[i].numpy(),
        })
        frame["rank"] = rank_shares(frame["share"])
        frame["flagged"] = False
        frames.append(frame.sort_values(["rank", "feature"], kind="stable"))
    return pd.concat(frames, ignore_index=True)[SENSITIVITY_COLUMNS if per_unit
                                                 else ATTRIBUTION_COLUMNS]


def rank_shares(share: pd.Series) -> pd.Series:
    """1 = largest share. Ties share the best rank, so two identical features rank alike; but
    features with zero share (the score does not respond to them) tie for *last*, so an
    all-zero table does not rank every feature first. A NaN share ranks last, not a crash."""
    rank = share.rank(ascending=False, method="min", na_option="bottom")
    zero = share == 0
    rank[zero] = len(share) - int(share.isna().sum())
    return rank.astype(int)


class Driver(NamedTuple):
    """One feature's part in one row's score."""

    feature: str
    value: float  # the row's value of the feature
    baseline: float  # the value it is compared with (audit.baseline)
    attribution: float  # the method's value (a gradient for per-unit methods)
    contribution: float  # in score units: attribution x (value - baseline) for gradients


# Why a row is shown in report.md: a declared proxy moves its score most, its score is
# furthest from its label, or (no proxies declared) one feature moves its score most.
EXAMPLE_REASONS = ("proxies", "misscored", "strongest")


@dataclass
class ExampleRecord:
    """One audited row kept for the report: its score and strongest drivers."""

    id: object
    output: str
    score: float
    label: float | None
    drivers: list[Driver]  # the top_k by |contribution|, largest first
    rank_value: float  # the value the examples are ranked by
    reason: str = "strongest"  # one of EXAMPLE_REASONS
    proxies: list[Driver] = field(default_factory=list)  # declared proxies not in drivers


@dataclass
class Gates:
    """Every check's gates and warnings, flattened: what a verdict needs."""

    flags: list[Gate] = field(default_factory=list)  # the failed gates
    warnings: list[Notice] = field(default_factory=list)
    all: list[Gate] = field(default_factory=list)

    @classmethod
    def of(cls, checks: list[CheckResult]) -> Gates:
        gates = [g for c in checks for g in c.gates]
        return cls(flags=[g for g in gates if not g.passed],
                   warnings=[w for c in checks for w in c.warnings], all=gates)

    @property
    def passed(self) -> bool:
        return not self.flags


@dataclass
class AuditResult:
    """Everything one audit found; the writers in :mod:`sensaudit.reports` turn it into
    files."""

    table: pd.DataFrame  # SENSITIVITY_COLUMNS, one row per (output, feature)
    checks: list[CheckResult]
    examples: list[ExampleRecord]
    features: list[str]
    outputs: list[str]
    rows: int  # rows audited (finite results)
    rows_dropped: int  # rows skipped for missing values (data.on_missing: drop)
    nonfinite_rows: int
    nonfinite_ids: list[object]  # as the row ids come: ints, text, ...
    nonfinite_allowed: bool
    model_path: str
    model_format: str
    data_path: str
    proxies: list[str]  # the declared proxies' features
    mean_scores: dict[str, float]
    method: str = "gradient"
    notes: list[str] = field(default_factory=list)  # the audit's own context notes
    # Every feature's contribution in a uniform sample of rows (the charts' distributions).
    contributions: ContributionSample | None = None
    # summary.json's "method": name, what it measures, per_unit, baseline, parameters.
    method_details: dict[str, Any] = field(default_factory=dict)
    # False when report.examples (auto) found more rows than it writes one by one: the
    # per-row file then holds the rows the report lists.
    examples_streamed: bool = True

    @property
    def per_unit(self) -> bool:
        """True when the table holds gradients (SENSITIVITY_COLUMNS), False for attributions
        in score units (ATTRIBUTION_COLUMNS)."""
        return "mean_gradient" in self.table.columns

    @property
    def gates(self) -> Gates:
        return Gates.of(self.checks)

    @property
    def findings(self) -> list[str]:
        """Problems first (every check's findings, in check order), then context notes."""
        return ([f for c in self.checks for f in c.findings]
                + [n for c in self.checks for n in c.notes] + self.notes)

    @property
    def passed(self) -> bool:
        nonfinite_ok = self.nonfinite_rows == 0 or self.nonfinite_allowed
        return self.gates.passed and nonfinite_ok
