"""What ``compare`` found, as the report writers read it, and the words for a gate's or a
noise's state that every writer shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sensaudit.results.audit_result import AuditResult


@dataclass
class ComparisonResult:
    """Everything ``compare`` found; the writers in :mod:`sensaudit.reports` write it."""

    table: pd.DataFrame  # one row per (output, feature)
    overall: dict  # per output: spearman, kendall_tau, top_k_overlap, agreement, score moves
    old: AuditResult
    new: AuditResult
    proxy_increases: list[dict] = field(default_factory=list)  # over compare's margin
    findings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.new.passed and not self.proxy_increases


def gate_change(flagged_old: bool, flagged_new: bool) -> str:
    """How a feature's gate moved: 'now flagged', 'cleared', 'flagged' or ''."""
    if flagged_new:
        return "flagged" if flagged_old else "now flagged"
    return "cleared" if flagged_old else ""


def noise_name(settings: dict) -> str:
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
