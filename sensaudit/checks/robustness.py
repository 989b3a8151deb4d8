"""``audit.robustness``: how far a small, plausible edit can push each row's score.

The gradient direction is exactly how adversarial examples are made. For every audited row
and output, a projected-gradient attack (:func:`sensaudit.core.perturb.adversarial_shift`) looks for
the largest score rise and fall within ``epsilon`` standard deviations per feature
(L-infinity), with ``immutable`` features held fixed and, under ``bounds: observed``, every
feature kept within the min..max of the rows read. The row's shift is the larger of the two.
For a linear scorer the attack is exact: every row's shift is epsilon x sum over mutable
features of |w_j| x std_j.

The stds and ranges are those of every row read (:class:`~sensaudit.checks.base.ModelContext`),
so the attack runs in the replay, once they are final. Each row's figures are kept
(robustness.csv; 8 bytes x (1 + 3 x outputs) per row, and its id), so the percentiles are exact
and so is the merge of partial results. The gate: the 95th percentile of the rows' shifts must
not exceed ``max_shift``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from sensaudit.checks.base import Check, CheckResult, Gate, ModelContext, Ranking, ReplayChunk
from sensaudit.core.errors import ConfigError, did_you_mean
from sensaudit.core.perturb import adversarial_shift, feature_effects
from sensaudit.settings.checks import RobustnessSettings
from sensaudit.settings.sections import AuditSettings
from sensaudit.stats.row_stats import RowColumns

SUBJECT = "adversarial shift"  # what the gates test (summary.json's flags name it as feature)


class Robustness(Check):
    name = "robustness"
    judges_the_model = True
    config_key = "robustness"
    Options = RobustnessSettings
    replays = True

    def __init__(self, settings: RobustnessSettings, immutable: list[str],
                 threshold: float | None, keep: int):
        self.settings = settings
        self.immutable = immutable  # feature names (groups expanded)
        self.threshold = threshold
        self.keep = keep
        self.per_row: RowColumns | None = None  # per output: score, up, down
        # [outputs, features], over rows, for each row's larger shift: |delta| / std, whether
        # the feature moved, and the score change its part of delta makes alone (toward the
        # shift's direction).
        self.moved_sum: np.ndarray | None = None
        self.moved_rows: np.ndarray | None = None
        self.effect_sum: np.ndarray | None = None

    @classmethod
    def check_names(cls, settings: AuditSettings, features: tuple[str, ...]) -> None:
        if settings.robustness is None:
            return
        names = [*features, *(g.name for g in settings.groups)]
        for i, name in enumerate(settings.robustness.immutable):
            if name not in names:
                raise ConfigError(f"audit.robustness.immutable[{i}] '{name}' is not an "
                                  f"audited feature or group{did_you_mean(name, names)} "
                                  f"(features: {', '.join(features)})")

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> Robustness | None:
        if settings.robustness is None:
            return None
        members = {group.name: list(group.columns) for group in settings.groups}
        immutable = [f for name in settings.robustness.immutable
                     for f in members.get(name, [name])]
        return cls(settings.robustness, immutable, settings.threshold,
                   max(settings.examples_in_report, 1))

    def replay(self, chunk: ReplayChunk, context: ModelContext) -> None:
        m, f = len(context.outputs), len(context.features)
        if self.per_row is None:
            self.per_row = RowColumns([f"{k}_{o}" for o in range(m)
                                       for k in ("score", "up", "down")])
            self.moved_sum = np.zeros((m, f))
            self.moved_rows = np.zeros((m, f), dtype=np.int64)
            self.effect_sum = np.zeros((m, f))
        if self.moved_sum is None or self.moved_rows is None or self.effect_sum is None:
            raise RuntimeError("robustness: its sums were not started")
        kept = chunk.finite.nonzero().flatten()
        if not len(kept):
            return
        x = chunk.x[kept.to(chunk.x.device)]
        std = context.std.to(x.device, x.dtype)
        mutable = torch.tensor([name not in self.immutable for name in context.features],
                               device=x.device)
        radius = torch.where(mutable, self.settings.epsilon * std, torch.zeros_like(std))
        lower = upper = None
        if self.settings.bounds == "observed":
            lower = context.minimum.to(x.device, x.dtype)
            upper = context.maximum.to(x.device, x.dtype)
        attack = adversarial_shift(context.model, x, radius, self.settings.steps, lower, upper,
                                   n_outputs=m)
        scores, up, down = (t.detach().to("cpu", torch.float64)
                            for t in (attack.scores, attack.up, attack.down))
        index = kept.numpy()
        ids = (chunk.ids.take(pa.array(index)) if isinstance(chunk.ids, pa.Array)
               else np.asarray(chunk.ids)[index])
        self.per_row.update(chunk.rows[index], ids,
                            torch.stack([scores, up, down], 2).reshape(len(index), -1).numpy())
        # Which features the attack moved: the perturbation of each row's larger shift.
        worse = (up >= down).to(attack.delta_up.device)[:, :, None]
        delta = torch.where(worse, attack.delta_up, attack.delta_down)
        effect = feature_effects(context.model, x, delta) * torch.where(worse, 1.0, -1.0)
        scaled = (delta.abs().double().cpu() / context.std.clamp_min(1e-300)).numpy()
        self.moved_sum += scaled.sum(0)
        self.moved_rows += (delta != 0).sum(0).cpu().numpy()
        self.effect_sum += effect.double().sum(0).cpu().numpy()

    def merge(self, other: Check) -> None:
        if not isinstance(other, Robustness):
            raise TypeError(f"cannot merge a {type(other).__name__} into Robustness")
        if other.per_row is not None:
            if self.per_row is None:
                self.per_row, self.moved_sum, self.moved_rows, self.effect_sum = (
                    other.per_row, other.moved_sum, other.moved_rows, other.effect_sum)
            else:
                if (self.moved_sum is None or self.moved_rows is None
                        or self.effect_sum is None):
                    raise RuntimeError("robustness: its sums were not started")
                self.per_row.merge(other.per_row)
                self.moved_sum += other.moved_sum
                self.moved_rows += other.moved_rows
                self.effect_sum += other.effect_sum

    def finish(self, ranking: Ranking) -> CheckResult:
        result = CheckResult(self.name)
        s = self.settings
        m = len(ranking.outputs)
        if self.per_row is not None:
            rows, ids, values = self.per_row.sorted()
        else:
            rows, ids, values = np.zeros(0, dtype=np.int64), [], np.zeros((0, 3 * m))
        values = values.reshape(len(rows), m, 3)
        records, frames, pushed = [], [], []
        how = (f"within {s.epsilon:g} standard deviations per feature ({s.steps} "
               f"projected-gradient step{'s' if s.steps > 1 else ''}"
               + (", each feature within its observed range" if s.bounds == "observed" else "")
               + (f", {', '.join(self.immutable)} held fixed" if self.immutable else "") + ")")
        for o, output in enumerate(ranking.outputs):
            score, up, down = values[:, o, 0], values[:, o, 1], values[:, o, 2]
            shift = np.maximum(up, down)
            figures = _figures(shift)
            passed = s.max_shift is None or not figures["p95_shift"] > s.max_shift
            moved = self._moved(o, len(rows), ranking.features)
            record = {"output": output, "epsilon": s.epsilon, "steps": s.steps,
                      "bounds": s.bounds, "immutable": self.immutable, "rows": len(rows),
                      **figures, "limit": s.max_shift, "passed": passed,
                      "features_moved": moved}
            frame = pd.DataFrame({"id": ids, "output": output, "score": score,
                                  "shift_up": up, "shift_down": down, "shift": shift})
            if self.threshold is not None:
                crosses, needed = _crossing(score, up, down, self.threshold)
                frame["crosses_threshold"] = crosses
                record.update(threshold=self.threshold, rows_crossing=int(crosses.sum()),
                              crossing_rate=float(crosses.mean()) if len(rows) else 0.0)
                order = np.lexsort((rows, needed))[: self.keep]  # least budget needed first
                pushed += [{"id": ids[i], "output": output, "score": float(score[i]),
                            "distance_to_threshold": abs(float(score[i]) - self.threshold),
                            "shift_toward_threshold": float(up[i] if score[i] < self.threshold
                                                            else down[i])}
                           for i in order if crosses[i]]
            records.append(record)
            frames.append(frame.assign(_row=rows))
            if s.max_shift is not None:
                result.gates.append(Gate(
                    check=self.name, subject=SUBJECT, output=output, passed=passed,
                    limit=f"95th-percentile shift <= {s.max_shift:g} (robustness.max_shift)",
                    details={"epsilon": s.epsilon, **figures}))
            self._words(result, output, m > 1, figures, passed, moved, record, how)
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if len(table):
            table = table.sort_values(["_row"], kind="stable")
        result.tables["robustness.csv"] = table.drop(columns=["_row"], errors="ignore")
        result.summary["robustness"] = records
        # Worded columns: the limit (robustness.max_shift) is on the 95th percentile, and the
        # row moved most is the "largest shift", not a second "max shift".
        result.report_tables["Adversarial shift"] = pd.DataFrame(
            [{"output": r["output"], "attack budget (std)": r["epsilon"],
              "mean shift": r["mean_shift"], "95th-percentile shift": r["p95_shift"],
              "largest shift": r["max_shift"],
              "limit on the 95th percentile (robustness.max_shift)": r["limit"],
              "passed": r["passed"]} for r in records])
        if pushed:
            result.summary["robustness_rows_crossing"] = pushed
            result.report_tables[f"Rows most easily pushed across the threshold "
                                 f"{self.threshold:g}"] = pd.DataFrame(pushed)
        return result

    def _moved(self, output: int, rows: int, features: list[str]) -> list[dict[str, Any]]:
        """Per feature: the mean score shift its part of the attack makes alone, the mean
        |change| in stds and the share of rows it was moved on; largest shift first."""
        if (self.moved_sum is None or self.moved_rows is None or self.effect_sum is None
                or rows == 0):
            return []
        moved = [{"feature": name, "mean_shift_alone": float(self.effect_sum[output, j] / rows),
                  "mean_abs_change_std": float(self.moved_sum[output, j] / rows),
                  "rows_moved_rate": float(self.moved_rows[output, j] / rows)}
                 for j, name in enumerate(features)]
        return sorted(moved, key=lambda d: (-d["mean_shift_alone"], d["feature"]))

    def _words(self, result: CheckResult, output: str, multi: bool, figures: dict[str, float],
               passed: bool, moved: list[dict[str, Any]], record: dict[str, Any],
               how: str) -> None:
        s = self.settings
        where = f"Output '{output}': " if multi else ""
        top = ", ".join(f"{d['feature']} ({_g(d['mean_shift_alone'])})"
                        for d in moved[:3] if d["mean_shift_alone"] > 0)
        figures_text = (f"the score moves by {_g(figures['mean_shift'])} on average, "
                        f"{_g(figures['p95_shift'])} at the 95th percentile of rows and "
                        f"{_g(figures['max_shift'])} for the row moved most")
        crossing = ""
        if "rows_crossing" in record:
            crossing = (f" {record['rows_crossing']:,} rows ({record['crossing_rate']:.1%}) can "
                        f"be pushed across the decision threshold {self.threshold:g}.")
        moved_text = (f" The features whose part of the attack moves the score most on its "
                      f"own: {top}." if top else "")
        if not passed:
            result.findings.append(
                f"{where}**Adversarial shift** over its limit: {how}, {figures_text}; the 95th "
                f"percentile is over its limit of {s.max_shift:g} (robustness.max_shift, a "
                f"limit on the 95th percentile).{crossing}{moved_text} Small "
                "plausible edits to these features move the score this much: constrain the "
                "model (monotone or smoother features, regularisation) or make the edits "
                "immutable if they cannot happen.")
        else:
            limit = (f" (within the limit on the 95th percentile, robustness.max_shift "
                     f"{s.max_shift:g})" if s.max_shift is not None else "")
            result.notes.append(f"{where}Adversarial shift {how}: {figures_text}{limit}."
                                f"{crossing}{moved_text}")


def _figures(shift: np.ndarray) -> dict[str, float]:
    if not len(shift):
        return {"mean_shift": math.nan, "p95_shift": math.nan, "max_shift": math.nan}
    return {"mean_shift": float(shift.mean()), "p95_shift": float(np.quantile(shift, 0.95)),
            "max_shift": float(shift.max())}


def _crossing(score: np.ndarray, up: np.ndarray, down: np.ndarray, threshold: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose decision (score >= threshold) the attack flips, and the fraction of the
    reachable shift each needs (distance to the threshold / shift toward it)."""
    above = score >= threshold
    distance = np.where(above, score - threshold, threshold - score)
    toward = np.where(above, down, up)
    crosses = np.where(above, toward > distance, toward >= distance) & (toward > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        needed = np.where(toward > 0, distance / toward, np.inf)
    return crosses, needed


def _g(value: float) -> str:
    return f"{value:.3g}"
