"""``audit.expect``: the score must move the expected way when a feature improves.

A row violates ``{feature: clarity, direction: increasing}`` when its gradient of an output
with respect to clarity is negative (positive for ``decreasing``); a gradient of exactly zero
does not violate (the score is flat there, not moving the wrong way). The violation rate is
over the rows the statistics use (finite results), per output; above ``max_violation_rate`` the
expectation fails the audit. The worst rows (the largest gradient the wrong way) are kept,
ties to the lower row number, so partial results merge exactly.

The verdict is about the model, not about the attribution method: it judges d score / d x_j
at the row whatever ``audit.method`` is. With ``gradient`` (a method whose values are the row's
gradient, ``row_gradient``) it reads the method's values as they are; with any other method
(gradient x input and integrated gradients attribute, smoothgrad averages slopes around the
row) it computes the gradient of the expected features only
(:func:`sensaudit.core.jacobian.partial_derivatives`), in the replay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from sensaudit.checks.base import Check, CheckResult, Gate, ModelContext, Ranking, ReplayChunk
from sensaudit.core.errors import ConfigError, did_you_mean
from sensaudit.core.jacobian import partial_derivatives
from sensaudit.methods import METHODS
from sensaudit.settings.checks import Expectation
from sensaudit.settings.sections import AuditSettings
from sensaudit.stats.accumulators import TopRows, arrow_as_python, as_python

WORST_ROWS_KEPT = 5


@dataclass
class Violation:
    id: object
    gradient: float


class Monotonicity(Check):
    name = "monotonicity"
    judges_the_model = True
    config_key = "expect"
    replays = True  # the per-row gradients, with the rows' ids

    def __init__(self, expectations: tuple[Expectation, ...], *, reads_gradient: bool = False):
        self.expectations = expectations
        # True: the method's values are the rows' gradients; else the check computes them.
        self.reads_gradient = reads_gradient
        self.rows: np.ndarray | None = None  # [outputs] rows counted
        self.violations: np.ndarray | None = None  # [outputs, expectations]
        self.worst: list[list[TopRows[Violation]]] = []
        self.index: list[int] = []

    @classmethod
    def check_names(cls, settings: AuditSettings, features: tuple[str, ...]) -> None:
        for i, expectation in enumerate(settings.expect):
            if expectation.feature not in features:
                raise ConfigError(f"audit.expect[{i}].feature '{expectation.feature}' is not "
                                  "an audited feature"
                                  f"{did_you_mean(expectation.feature, features)} "
                                  f"(features: {', '.join(features)})")

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> Monotonicity | None:
        if not settings.expect:
            return None
        method = METHODS.get(settings.method)
        return cls(settings.expect, reads_gradient=method is not None and method.row_gradient)

    def _start(self, context: ModelContext) -> None:
        m, e = len(context.outputs), len(self.expectations)
        self.index = [context.features.index(x.feature) for x in self.expectations]
        self.rows = np.zeros(m, dtype=np.int64)
        self.violations = np.zeros((m, e), dtype=np.int64)
        self.worst = [[TopRows(WORST_ROWS_KEPT) for _ in range(e)] for _ in range(m)]

    def replay(self, chunk: ReplayChunk, context: ModelContext) -> None:
        if self.rows is None:
            self._start(context)
        if self.rows is None or self.violations is None:  # _start sets both
            raise RuntimeError("monotonicity: its counts were not started")
        kept = chunk.finite.nonzero().flatten().numpy()
        # [rows, outputs, expectations]: each gradient times its expected sign; < 0 is wrong.
        signs = np.array([x.sign for x in self.expectations], dtype=np.float64)
        signed = self._gradients(chunk, context, kept) * signs
        self.rows += len(kept)
        wrong = signed < 0
        self.violations += wrong.sum(0)
        for o, e in zip(*np.nonzero(wrong.any(0)), strict=True):
            column = signed[:, o, e]
            # Only this chunk's own worst can enter the kept lists: no loop over every row.
            for r in np.argsort(column, kind="stable")[:WORST_ROWS_KEPT]:
                if column[r] >= 0:
                    break
                row = int(kept[r])
                violation = Violation(id=as_python(arrow_as_python(chunk.ids[row])),
                                      gradient=float(column[r] * signs[e]))
                self.worst[o][e].offer(-float(column[r]), int(chunk.rows[row]), int(o),
                                       lambda v=violation: v)

    def _gradients(self, chunk: ReplayChunk, context: ModelContext, kept: np.ndarray
                   ) -> np.ndarray:
        """float64 [kept rows, outputs, expectations]: d score / d feature at each row."""
        if self.reads_gradient:
            read: np.ndarray = chunk.values[:, :, self.index].double().numpy()[kept]
            return read
        columns = sorted(set(self.index))
        if not len(kept):
            return np.zeros((0, len(context.outputs), len(self.index)))
        x = chunk.x[torch.from_numpy(kept).to(chunk.x.device)]
        slopes = partial_derivatives(context.model, x, columns).double().cpu().numpy()
        return slopes[:, :, [columns.index(j) for j in self.index]]

    def merge(self, other: Check) -> None:
        if not isinstance(other, Monotonicity):
            raise TypeError(f"cannot merge a {type(other).__name__} into Monotonicity")
        if other.rows is None or other.violations is None:
            return
        if self.rows is None:
            self.rows, self.violations = other.rows.copy(), other.violations.copy()
            self.worst, self.index = other.worst, other.index
            return
        if self.violations is None or other.violations is None:
            raise RuntimeError("monotonicity: its counts were not started")
        self.rows += other.rows
        self.violations += other.violations
        for mine, theirs in zip(self.worst, other.worst, strict=True):
            for a, b in zip(mine, theirs, strict=True):
                a.merge(b)

    def finish(self, ranking: Ranking) -> CheckResult:
        result = CheckResult(self.name)
        multi = len(ranking.outputs) > 1
        records, table_rows = [], []
        for o, output in enumerate(ranking.outputs):
            rows = int(self.rows[o]) if self.rows is not None else 0
            for e, expectation in enumerate(self.expectations):
                count = int(self.violations[o, e]) if self.violations is not None else 0
                rate = count / rows if rows else 0.0
                passed = rate <= expectation.max_violation_rate
                worst = [vars(v) for v in self.worst[o][e].best_first()] if self.worst else []
                allowed = f"{expectation.max_violation_rate:.2%}"
                limit = f"violation rate <= {allowed}"
                result.gates.append(Gate(
                    check=self.name, subject=expectation.feature, output=output, passed=passed,
                    limit=limit, details={"direction": expectation.direction,
                                          "violation_rate": rate, "violations": count,
                                          "rows": rows}))
                records.append({"feature": expectation.feature, "output": output,
                                "direction": expectation.direction, "violation_rate": rate,
                                "violations": count, "rows": rows,
                                "limit": expectation.max_violation_rate, "passed": passed,
                                "worst_rows": worst})
                table_rows.append({"output": output, "feature": expectation.feature,
                                   "direction": expectation.direction,
                                   "violation_rate": rate, "violations": count, "rows": rows,
                                   "max_violation_rate": expectation.max_violation_rate,
                                   "passed": passed})
                where = f" for output '{output}'" if multi else ""
                wrong = "falls" if expectation.direction == "increasing" else "rises"
                if not passed:
                    ids = ", ".join(f"{v['id']} ({v['gradient']:+.3g})" for v in worst)
                    result.findings.append(
                        f"**{expectation.feature}** is expected to be {expectation.direction}"
                        f"{where}, but on {rate:.1%} of rows ({count:,} of {rows:,}) the score "
                        f"{wrong} as it grows, over the allowed {allowed}. "
                        f"The rows with the largest wrong-way gradient: {ids}. The model has "
                        "learned a relation the domain rules out: check those rows and the "
                        "training data around them.")
                else:
                    result.notes.append(
                        f"Expectation met: the score is {expectation.direction} in "
                        f"{expectation.feature}{where} on {1 - rate:.1%} of rows "
                        f"({count:,} violation(s), allowed {allowed}).")
        result.summary["monotonicity"] = records
        result.tables["monotonicity.csv"] = pd.DataFrame(table_rows)
        result.report_tables["Monotonicity expectations"] = pd.DataFrame(table_rows)
        return result
