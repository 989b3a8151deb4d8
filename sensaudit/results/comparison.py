"""What ``compare`` found, as the report writers read it, and the words for a gate's or a
noise's state that every writer shares."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from sensaudit.results.audit_result import AuditResult


@dataclass(frozen=True)
class CosineSummary:
    """How alike the two models' per-row contribution vectors are: the mean and quantiles of
    their cosine over the rows (1: the same direction; quantiles to a 0.001 resolution)."""

    mean: float
    p05: float
    p25: float
    median: float
    p75: float
    p95: float


@dataclass(frozen=True)
class ScoreChange:
    """How the scores moved from the old model to the new one, over the rows (new - old)."""

    mean: float
    mean_abs: float
    max_abs: float


@dataclass(frozen=True)
class ChangedRow:
    """One row's scores under both models and the cosine of its two contribution vectors."""

    id: Any
    output: str
    score_old: float
    score_new: float
    cosine: float


@dataclass(frozen=True)
class OutputAgreement:
    """How far the old and new model agree on one output: their feature rankings (rank
    correlations, top-k overlap) and, per row, their contributions and scores."""

    spearman: float  # nan when a ranking is constant
    kendall_tau: float  # tau-b; nan when a ranking is constant
    top_k: int
    top_k_overlap: float  # the fraction of the old top_k still in the new top_k
    cosine: CosineSummary
    score_change: ScoreChange
    least_agreeing_rows: tuple[ChangedRow, ...]  # lowest cosine first
    most_moved_rows: tuple[ChangedRow, ...]  # largest |score change| first

    def as_dict(self) -> dict[str, Any]:
        """The figures as comparison.json lists them (rows as lists)."""
        return asdict(self, dict_factory=_lists)


@dataclass(frozen=True)
class ProxyIncrease:
    """A declared proxy whose share grew by more than compare.max_proxy_share_increase."""

    feature: str
    output: str
    delta_share: float
    margin: float


@dataclass
class ComparisonResult:
    """Everything ``compare`` found; the writers in :mod:`sensaudit.reports` write it."""

    table: pd.DataFrame  # one row per (output, feature)
    overall: dict[str, OutputAgreement]  # per output name
    old: AuditResult
    new: AuditResult
    proxy_increases: list[ProxyIncrease] = field(default_factory=list)  # over compare's margin
    findings: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.new.passed and not self.proxy_increases


def _lists(items: list[tuple[str, Any]]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in items}


def gate_change(flagged_old: bool, flagged_new: bool) -> str:
    """How a feature's gate moved: 'now flagged', 'cleared', 'flagged' or ''."""
    if flagged_new:
        return "flagged" if flagged_old else "now flagged"
    return "cleared" if flagged_old else ""


def noise_name(settings: dict[str, Any]) -> str:
    """What the change's interval measures, in words."""
    if settings.get("noise") == "rows and retraining":
        replicas = len(settings.get("old_replicas", [])) + len(settings.get("new_replicas", []))
        rows = " and row sampling" if settings.get("bootstrap_samples") else ""
        return f"retraining noise ({replicas} retrained cop{'y' if replicas == 1 else 'ies'}){rows}"
    return "row-sampling noise only"


# --- a feature only one model takes (compare across models whose inputs differ) --------------

ABSENT = "—"  # a figure of a model that does not take the feature
INPUTS_NOTE = ("The two models take different columns: a feature only the new model takes is "
               "marked added, one only the old model takes removed, with its share on the side "
               "that takes it. Each model's shares are normalised over its own inputs; rank "
               "agreement compares the features both take.")


def input_status(row: object) -> str:
    """'common', or 'added' / 'removed' for a feature only the new / old model takes."""
    return str(getattr(row, "status", "common"))


def share_cell(share: Any) -> str:
    """A share in % (one decimal), or ABSENT where the model does not take the feature."""
    return ABSENT if _missing(share) else f"{float(share):.1%}"


def rank_move(row: Any) -> str:
    """'3 -> 1', with ABSENT on the side of a model that does not take the feature."""
    old, new = row.rank_old, row.rank_new
    return f"{ABSENT if _missing(old) else old} -> {ABSENT if _missing(new) else new}"


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)
