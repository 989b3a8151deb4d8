"""What ``compare`` found, as the report writers read it, and the words for a gate's or a
noise's state that every writer shares."""

from __future__ import annotations

from dataclasses import dataclass, field

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
