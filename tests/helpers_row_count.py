"""A check that counts the rows it is fed, for tests/test_check_protocol.py. It lives in a
module of its own so Ray's worker processes can import it (``register`` is their setup hook):
a check registered only in the driver's process is never built on a worker."""

from __future__ import annotations

import numpy as np
import torch

from sensaudit.checks import CHECKS
from sensaudit.checks.base import Check, CheckResult, Ranking
from sensaudit.methods.base import Attributions
from sensaudit.settings.sections import AuditSettings


class RowCount(Check):
    """Counts every row :meth:`update` sees; merging adds the counts."""

    name = "row_count"

    def __init__(self) -> None:
        self.rows = 0

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> RowCount:
        return cls()

    def update(self, rows: np.ndarray, x: torch.Tensor, attributions: Attributions,
               labels: np.ndarray | None) -> None:
        self.rows += len(rows)

    def merge(self, other: Check) -> None:
        assert isinstance(other, RowCount)
        self.rows += other.rows

    def finish(self, ranking: Ranking) -> CheckResult:
        return CheckResult(self.name, summary={"row_count": self.rows})


def register() -> None:
    """Ray's worker_process_setup_hook: the worker's registry gets the check too."""
    if RowCount not in CHECKS:
        CHECKS.append(RowCount)
