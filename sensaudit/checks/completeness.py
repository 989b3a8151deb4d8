"""``completeness``: a complete method's attributions (integrated gradients) must add up to the
score's change from the baseline, f(x) - f(baseline); the gap is the quadrature's error.

Run whenever the audit's method is complete. Per output it reports the mean and largest
absolute gap and the mean gap relative to the mean |f(x) - f(baseline)| (summary.json
"checks"), and warns when that relative gap is over ``max_relative_gap`` (option
``audit.checks.completeness.max_relative_gap``, default 1%): the attributions then miss part
of the score, and more path steps (audit.steps) are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sensaudit.checks.base import Check, CheckResult, Notice, Ranking
from sensaudit.core.errors import ConfigError
from sensaudit.methods import METHODS
from sensaudit.methods.base import Attributions
from sensaudit.settings.options import check_declared, number, option
from sensaudit.settings.sections import AuditSettings
from sensaudit.stats.accumulators import finite_rows

DEFAULT_MAX_RELATIVE_GAP = 0.01


class CompletenessGap:
    """Per output: rows, sum and max of |gap|, sum of |f(x) - f(baseline)| (float64);
    sums and a max, so partitions merge exactly."""

    def __init__(self, n_outputs: int):
        self.rows = 0
        self.sum_abs_gap = torch.zeros(n_outputs, dtype=torch.float64)
        self.max_abs_gap = torch.zeros(n_outputs, dtype=torch.float64)
        self.sum_abs_change = torch.zeros(n_outputs, dtype=torch.float64)

    def update(self, attributions: Attributions) -> None:
        """Rows with finite results only; needs ``attributions.baseline_scores``."""
        if attributions.baseline_scores is None:
            return
        finite = finite_rows(attributions.scores, attributions.values)
        scores = attributions.scores[finite].detach().to("cpu", torch.float64)
        total = attributions.values[finite].detach().to("cpu", torch.float64).sum(2)
        change = scores - attributions.baseline_scores.detach().to("cpu", torch.float64)
        gap = (total - change).abs()  # [rows, outputs]
        self.rows += gap.shape[0]
        self.sum_abs_gap += gap.sum(0)
        if gap.shape[0]:
            self.max_abs_gap = torch.maximum(self.max_abs_gap, gap.amax(0))
        self.sum_abs_change += change.abs().sum(0)

    def merge(self, other: CompletenessGap) -> None:
        self.rows += other.rows
        self.sum_abs_gap += other.sum_abs_gap
        self.max_abs_gap = torch.maximum(self.max_abs_gap, other.max_abs_gap)
        self.sum_abs_change += other.sum_abs_change

    def figures(self, output: int) -> dict[str, float]:
        rows = max(self.rows, 1)
        gap = float(self.sum_abs_gap[output]) / rows
        change = float(self.sum_abs_change[output]) / rows
        relative = gap / change if change > 0 else (0.0 if gap == 0 else math.inf)
        return {"mean_abs_gap": gap, "max_abs_gap": float(self.max_abs_gap[output]),
                "mean_abs_score_change": change, "relative_gap": relative}


@dataclass(frozen=True)
class CompletenessOptions:
    """``audit.checks.completeness``."""

    max_relative_gap: float = option(
        DEFAULT_MAX_RELATIVE_GAP, number(0, 1, low_open=True),
        "warn when the mean gap exceeds this fraction of the mean score change")

    def __post_init__(self) -> None:
        check_declared(self)


class Completeness(Check):
    name = "completeness"
    Options = CompletenessOptions

    def __init__(self, max_relative_gap: float = DEFAULT_MAX_RELATIVE_GAP,
                 method: str = "integrated_gradients", steps: int | None = None):
        self.max_relative_gap = max_relative_gap
        self.method, self.steps = method, steps
        self.gaps: CompletenessGap | None = None

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> Completeness | None:
        method = METHODS.get(settings.method)
        if method is None or not method.complete:
            if cls.name in settings.checks:
                complete = [name for name, m in METHODS.items() if m.complete]
                raise ConfigError(f"audit.checks.completeness applies to methods whose "
                                  f"attributions add up to the score ({', '.join(complete)}); "
                                  f"audit.method is '{settings.method}'")
            return None
        # Run whenever the method is complete, with the default limit when not configured.
        options = cls.configured(settings) or CompletenessOptions()
        return cls(options.max_relative_gap, settings.method,
                   method.option_values(settings).get("steps"))

    def update(self, rows: np.ndarray, x: torch.Tensor, attributions: Attributions,
               labels: np.ndarray | None) -> None:
        if self.gaps is None:
            self.gaps = CompletenessGap(attributions.scores.shape[1])
        self.gaps.update(attributions)

    def merge(self, other: Check) -> None:
        if isinstance(other, Completeness) and other.gaps is not None:
            if self.gaps is None:
                self.gaps = other.gaps
            else:
                self.gaps.merge(other.gaps)

    def finish(self, ranking: Ranking) -> CheckResult:
        result = CheckResult(self.name)
        if self.gaps is None:
            return result
        multi = len(ranking.outputs) > 1
        outputs = {}
        for i, output in enumerate(ranking.outputs):
            figures = self.gaps.figures(i)
            outputs[output] = figures
            where = f" for output '{output}'" if multi else ""
            said = (f"a mean absolute gap of {figures['mean_abs_gap']:.3g} ("
                    f"{_percent(figures['relative_gap'])} of the mean |f(x) - f(baseline)|, "
                    f"{figures['mean_abs_score_change']:.3g}; largest "
                    f"{figures['max_abs_gap']:.3g})")
            if figures["relative_gap"] > self.max_relative_gap:
                result.warnings.append(Notice(check=self.name, subject="attributions",
                                              output=output, details=figures))
                steps = f" (now {self.steps})" if self.steps is not None else ""
                result.findings.append(
                    f"The {self.method} attributions{where} do not add up to the score's change "
                    f"from the baseline: {said}, over the {_percent(self.max_relative_gap)} "
                    f"allowed. The path integral is not converged, so the attributions miss "
                    f"part of the score; raise audit.steps{steps}.")
            else:
                result.notes.append(f"The {self.method} attributions{where} add up to the "
                                    f"score's change from the baseline to {said}.")
        result.summary = {"completeness": {"max_relative_gap": self.max_relative_gap,
                                           "outputs": outputs}}
        return result


def _percent(value: float) -> str:
    if not math.isfinite(value):
        return "an unbounded share"
    return f"{value:.2%}" if value >= 1e-4 else f"{value * 100:.1e}%"
