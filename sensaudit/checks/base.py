"""The check protocol: accumulate per chunk, merge, finish into a result with gates.

A check is one file in this folder and one line in :data:`sensaudit.checks.CHECKS`. The
pipeline builds every registered check from the audit settings (a check that is not configured
returns None), feeds it each chunk's rows and attributions, merges partial checks from other
workers, and finally hands it the ranked sensitivity table. Its :class:`CheckResult` carries
everything the report writers render, so a new check needs no edits in them:

- gates: pass/fail tests against a limit (a failed gate fails the audit, exit 1);
- warnings: things worth a look that do not fail the audit;
- findings (problems, listed first) and notes (context, listed after every check's findings);
- tables: extra CSV files to write, by file name;
- summary: the check's figures, which summary.json records whatever the verdict.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from ..config import AuditSettings
from ..methods import Attributions


@dataclass
class Gate:
    """One pass/fail test: ``subject`` (a feature, usually) of ``output`` against ``limit``.

    ``details`` are the figures behind it, in the order summary.json lists them.
    """

    check: str
    subject: str
    output: str
    passed: bool
    limit: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Notice:
    """A warning: worth a look, but not a failed gate."""

    check: str
    subject: str
    output: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckResult:
    check: str
    gates: list[Gate] = field(default_factory=list)
    warnings: list[Notice] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[Gate]:
        return [gate for gate in self.gates if not gate.passed]


@dataclass
class Ranking:
    """What checks see when they finish: the ranked sensitivity table and its axes."""

    table: pd.DataFrame  # results.SENSITIVITY_COLUMNS, one row per (output, feature)
    features: list[str]
    outputs: list[str]


class Check(ABC):
    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: AuditSettings) -> Check | None:
        """This check as the settings configure it, or None when it is not asked for."""

    def update(self, rows: np.ndarray, x: torch.Tensor,  # noqa: B027 - optional hook
               attributions: Attributions) -> None:
        """One chunk: row numbers [rows], inputs [rows, features] and their attributions.
        Checks that only read the final ranking leave this as it is."""

    def merge(self, other: Check) -> None:  # noqa: B027 - optional hook
        """Fold in the same check run over other rows (another worker's partition)."""

    @abstractmethod
    def finish(self, ranking: Ranking) -> CheckResult:
        """Judge the whole audit."""
