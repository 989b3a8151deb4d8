"""``audit.linearity``: where the gradient cannot be trusted to say how the score moves.

A gradient is a local slope. Where the score saturates (a sigmoid near 0 or 1) or has a kink
(ReLU, clipping, a tree-like step), a small but finite change of the feature moves the score by
something else than gradient x change. For every row, feature and output, the feature alone is
moved by ``step`` standard deviations each way (:func:`sensaudit.core.perturb.finite_steps`) and the
actual score change compared with the gradient's prediction. A row is *off* for a feature when,
either way, the two differ by more than ``tolerance`` of the larger of: the two changes, and
the feature's typical change for that step (step x its scaled sensitivity). The last keeps a
row where both are negligible (its gradient crosses zero there) from counting as off: a
mismatch no share or contribution would show.

Per (output, feature): ``agreement`` = sum |actual| / sum |predicted| over rows and both ways
(1: the gradient predicts the size of the change; below 1 it overstates it, as under
saturation; above 1 it understates it, as past a kink), ``off_rate`` (the share of rows off),
the mean relative error, ``error_ratio`` (sum |actual - predicted| / sum of the larger of the
two) and ``material_error``: the mean |actual - predicted| over rows and both ways, per std
of the feature moved, as a fraction of the score's std over the rows. A mismatch is *material*
when ``material_error`` exceeds ``tolerance``: moving the feature by one std, the gradient
mispredicts the score by more than that fraction of the score's spread on average, which is
what a share, a ranking or a row's contribution built on the gradient would carry. Every ReLU
network has kinks, and a step crosses some of them on many rows: off rows alone are not a
finding (a trained ReLU MLP has 15-45% of rows off per feature at a mismatch of 0.5-5% of the
score's spread, tests/test_linearity.py). A feature warns (a failed gate with ``gate:
true``) when its off rate is above ``max_off_rate`` *and* its mismatch is material. The
gradient is recomputed here whatever ``audit.method`` is, since it is the gradient whose trust
is in question. Sums only: partial results merge.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from sensaudit.checks.base import (
    Check,
    CheckResult,
    Gate,
    ModelContext,
    Notice,
    Ranking,
    ReplayChunk,
)
from sensaudit.core.jacobian import scores_and_jacobian
from sensaudit.core.perturb import finite_steps
from sensaudit.settings.checks import LinearitySettings
from sensaudit.settings.sections import AuditSettings

# A finite difference of float scores carries rounding of about eps x |score| on each side.
ROUNDING_FACTOR = 64


class Linearity(Check):
    name = "linearity"
    judges_the_model = True
    config_key = "linearity"
    Options = LinearitySettings
    replays = True

    def __init__(self, settings: LinearitySettings):
        self.settings = settings
        # Each [outputs, features]: rows counted, rows off, sums of |actual| and |predicted|
        # (both ways) and of each row's relative error (the worse way).
        self.sums: dict[str, np.ndarray] = {}
        # [outputs] each: rows, mean and sum of squared deviations of the scores (Chan et
        # al.'s pairwise merge), for the score's spread.
        self.spread: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> Linearity | None:
        return None if settings.linearity is None else cls(settings.linearity)

    def replay(self, chunk: ReplayChunk, context: ModelContext) -> None:
        kept = chunk.finite.nonzero().flatten()
        if not self.sums:
            shape = (len(context.outputs), len(context.features))
            self.sums = {k: np.zeros(shape) for k in ("rows", "off", "actual", "predicted",
                                                      "relative_error", "error", "change")}
        if not len(kept):
            return
        x = chunk.x[kept.to(chunk.x.device)]
        step = (self.settings.step * context.std).to(x.device, x.dtype)
        _, gradient = scores_and_jacobian(context.model, x)
        base, plus, minus = finite_steps(context.model, x, step)
        eps = torch.finfo(x.dtype).eps
        typical = self.settings.step * _scaled(context).to(x.device, x.dtype)  # [outputs, f]
        off = torch.zeros_like(plus, dtype=torch.bool)
        worst = torch.zeros_like(plus)
        for actual, predicted in ((plus, gradient * step), (minus, -gradient * step)):
            error = (actual - predicted).abs()
            scale = torch.maximum(torch.maximum(actual.abs(), predicted.abs()), typical)
            noise = ROUNDING_FACTOR * eps * (base.abs()[:, :, None] + (base[:, :, None]
                                                                       + actual).abs())
            off |= error > self.settings.tolerance * scale + noise
            relative = torch.where(scale > noise, error / scale.clamp_min(1e-300),
                                   torch.zeros_like(error))
            worst = torch.maximum(worst, relative)
            self.sums["error"] += error.sum(0).double().cpu().numpy()
            self.sums["change"] += torch.maximum(actual.abs(), predicted.abs()).sum(0).double(
                ).cpu().numpy()
            self.sums["actual"] += actual.abs().sum(0).double().cpu().numpy()
            self.sums["predicted"] += predicted.abs().sum(0).double().cpu().numpy()
        self.sums["rows"] += len(kept)
        self._add_spread(base.double().cpu().numpy())
        self.sums["off"] += off.sum(0).double().cpu().numpy()
        self.sums["relative_error"] += worst.sum(0).double().cpu().numpy()

    def _add_spread(self, scores: np.ndarray) -> None:
        """Fold a chunk's scores [rows, outputs] into the running count, mean and M2."""
        mean = scores.mean(0)
        self._merge_spread((np.full(scores.shape[1], float(len(scores))), mean,
                            ((scores - mean) ** 2).sum(0)))

    def _merge_spread(self, other: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> None:
        if other is None:
            return
        if self.spread is None:
            self.spread = (other[0].copy(), other[1].copy(), other[2].copy())
            return
        (n_a, mean_a, m2_a), (n_b, mean_b, m2_b) = self.spread, other
        n = n_a + n_b
        delta = mean_b - mean_a
        self.spread = (n, mean_a + delta * n_b / n, m2_a + m2_b + delta**2 * n_a * n_b / n)

    def merge(self, other: Check) -> None:
        if not isinstance(other, Linearity):
            raise TypeError(f"cannot merge a {type(other).__name__} into Linearity")
        self._merge_spread(other.spread)
        if not self.sums:
            self.sums = {k: v.copy() for k, v in other.sums.items()}
            return
        for key, value in other.sums.items():
            self.sums[key] += value

    def finish(self, ranking: Ranking) -> CheckResult:
        result = CheckResult(self.name)
        s = self.settings
        multi = len(ranking.outputs) > 1
        features = ranking.features
        records = []
        for o, output in enumerate(ranking.outputs):
            order = (ranking.table[(ranking.table["output"] == output)
                                   & ranking.table["feature"].isin(features)]
                     .sort_values(["rank", "feature"])["feature"].tolist())
            for name in order:
                j = features.index(name)
                figures = self._figures(o, j)
                records.append({"output": output, "feature": name, "step_std": s.step,
                                **figures})
                broken = (figures["off_rate"] > s.max_off_rate
                          and figures["material_error"] > s.tolerance)
                details = {**figures, "max_off_rate": s.max_off_rate, "step_std": s.step}
                if s.gate:
                    result.gates.append(Gate(check=self.name, subject=name, output=output,
                                             passed=not broken,
                                             limit=f"off rate <= {s.max_off_rate:.0%}",
                                             details=details))
                if not broken:
                    continue
                if not s.gate:
                    result.warnings.append(Notice(check=self.name, subject=name, output=output,
                                                  details=details))
                where = f" for output '{output}'" if multi else ""
                agreement = figures["agreement"]
                way = ("overstates the change (saturation?)" if agreement < 0.95
                       else "understates the change (a kink or steep curvature?)"
                       if agreement > 1.05 else "errs both ways (curvature that changes sign?)")
                result.findings.append(
                    f"**{name}**'s gradient{where} does not predict a step of {s.step:g} std: "
                    f"on {figures['off_rate']:.1%} of rows the score change differs from "
                    f"gradient x step by more than {s.tolerance:.0%}, and on average the "
                    f"gradient misses a one-std move by {figures['material_error']:.1%} of the "
                    f"score's spread (agreement {figures['agreement']:.3g}: the gradient "
                    f"{way}). Its share and its "
                    "per-row contributions are local slopes that do not hold over a typical "
                    "change: read them with care.")
        table = pd.DataFrame(records)
        if not any(r["off_rate"] > s.max_off_rate for r in records):
            result.notes.append(
                f"Local linearity: for every feature the gradient predicts the score change of "
                f"a {s.step:g}-std step within {s.tolerance:.0%} on at least "
                f"{1 - s.max_off_rate:.0%} of rows.")
        elif not any(r["off_rate"] > s.max_off_rate and r["material_error"] > s.tolerance
                     for r in records):
            result.notes.append(
                f"Local linearity: on some features the gradient misses a {s.step:g}-std step "
                f"by more than {s.tolerance:.0%} on over {s.max_off_rate:.0%} of rows (kinks), "
                f"but for every feature its mean error for a one-std move stays within "
                f"{s.tolerance:.0%} of the score's spread: not material.")
        result.tables["linearity.csv"] = table
        result.report_tables["Local linearity (gradient vs a finite step)"] = table
        result.summary["linearity"] = records
        # The limits the records are judged against (the chart draws them).
        result.summary["linearity_settings"] = {"step": s.step, "tolerance": s.tolerance,
                                                "max_off_rate": s.max_off_rate,
                                                "gate": s.gate}
        return result

    def _figures(self, o: int, j: int) -> dict[str, float]:
        """agreement, off_rate, mean_relative_error and rows of output o, feature j."""
        rows = float(self.sums["rows"][o, j]) if self.sums else 0.0
        predicted = float(self.sums["predicted"][o, j]) if self.sums else 0.0
        actual = float(self.sums["actual"][o, j]) if self.sums else 0.0
        change = float(self.sums["change"][o, j]) if self.sums else 0.0
        return {"agreement": actual / predicted if predicted > 0 else (1.0 if actual == 0
                                                                      else float("inf")),
                "off_rate": float(self.sums["off"][o, j]) / rows if rows else 0.0,
                "mean_relative_error": (float(self.sums["relative_error"][o, j]) / rows
                                        if rows else 0.0),
                "error_ratio": (float(self.sums["error"][o, j]) / change if change > 0
                                else 0.0),
                "material_error": self._material(o, j),
                "rows": int(rows)}


    def _material(self, o: int, j: int) -> float:
        """The gradient's mean |error| over rows and both ways, per std of the feature moved,
        as a fraction of the score's std: 0.05 = a one-std move is mispredicted, on average,
        by 5% of the score's spread."""
        rows = float(self.sums["rows"][o, j]) if self.sums else 0.0
        error = float(self.sums["error"][o, j]) if self.sums else 0.0
        if rows < 1 or error == 0 or self.spread is None:
            return 0.0
        n, _, m2 = self.spread
        spread = math.sqrt(m2[o] / (n[o] - 1)) if n[o] > 1 else 0.0
        if spread == 0:
            return math.inf
        return error / (2 * rows) / self.settings.step / spread


def _scaled(context: ModelContext) -> torch.Tensor:
    """float64 [outputs, features]: each feature's scaled sensitivity (the typical score change
    for a one-std change) from the ranked table."""
    table = context.table.set_index(["output", "feature"])["scaled_sensitivity"]
    return torch.tensor([[float(table[(o, f)]) for f in context.features]
                         for o in context.outputs], dtype=torch.float64)
