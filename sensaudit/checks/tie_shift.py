"""Did the label's tie to a feature fall between the training rows and the audited rows? The
suspects check's test when the audit is given the training rows (``data.train``,
:mod:`sensaudit.checks.suspects`).

A proxy is a feature the label followed in training and does not follow here: copy length
tracked quality in the rows the model learned from, so the model learned it, and it does not
track quality in the rows being scored. A genuine feature's tie to the label is the same in both
(up to sampling), whether or not the model over-fits it. So with the training rows at hand the
question "proxy or not" has a direct test, which needs neither the model nor many audited rows:

- the tie: Pearson's r of the feature with the label, on the training rows (r_t, n_t rows)
  and on the audited rows (r_a, n_a). A feature of 3 to ``LEVELS`` (16) values in the training
  rows is read as codes, which a model may use in any order: its tie is the label's
  correlation with its levels' mean labels in training, r_t with each training row's own label
  left out of its level's mean (so that L - 1 fitted means do not inflate it), r_a on the
  audited rows with the training rows' means (:func:`held_out_coding_tie`,
  :func:`coding_tie`);
- the test: Fisher's z of each, z = s (atanh r_t - atanh r_a) / sqrt(1/(n_t - 3) + 1/(n_a - 3)),
  with s the sign of r_t, so that z is large when the tie the training rows show has weakened
  (or reversed) on the audited rows; one-sided, at ``level`` divided by the number of features
  tested (Bonferroni). Two samples of one population give a z near standard normal, so a
  genuine feature is called fallen with probability about ``level`` at most.

The converse: a tie the training rows show beyond chance (at the same level) that shows no sign
of a fall on the audited rows (z under the one-sided 5% quantile) has **held**: the label
follows the feature here as it did in training (a breast-cancer model's mean_texture, -0.44 in
training and -0.40 on the audited rows, which the audited rows alone flagged as a proxy).

What it does not see: a continuous feature the label follows through a curve Pearson's r
misses (a U shape) shows no tie in training, and cannot fall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sensaudit.stats.label_correlation import LabelTies, coding_tie, held_out_coding_tie
from sensaudit.stats.normal import normal_cdf, normal_quantile

# Fisher's z needs more than 3 rows on each side.
MIN_ROWS = 4
# No sign of a fall: z under the one-sided 5% quantile.
NO_FALL = normal_quantile(0.95)


@dataclass(frozen=True)
class TieShift:
    """One feature's tie to the label on the training rows and on the audited rows, the test's
    statistic ``z``, its one-sided p-value, whether the fall is beyond chance at the
    Bonferroni-corrected level, and whether the tie ``held`` (beyond chance in training, and no
    sign of a fall)."""

    feature: str
    train: float
    audit: float
    train_rows: int
    audit_rows: int
    z: float
    p: float
    fell: bool
    held: bool = False
    levels: int = 0  # read as this many codes; 0: Pearson's r
    critical: float = math.inf  # the z a fall needs

    def kept_reason(self) -> str:
        """Why a feature the model does better without, whose tie did not fall, is
        over-relied rather than a proxy."""
        figures = (f"{self.measure()} {self.train:+.2f} on the {self.train_rows:,} training "
                   f"rows (data.train), {self.audit:+.2f} on these rows")
        if self.held:
            return (f"but its tie to the label held from training: {figures} (no sign of a "
                    f"fall: Fisher's z = {self.z:.1f}), so the model over-relies on a feature "
                    "the label follows rather than leaning on a proxy")
        return (f"but its tie to the label did not fall from training beyond chance: {figures} "
                f"(Fisher's z = {self.z:.1f}, a fall needs {self.critical:.1f}), so it is "
                "named over-relied rather than a proxy (a proxy is what the label followed in "
                "training only)")

    def reason(self) -> str:
        """The fall in words a reviewer can check from suspects.csv."""
        return (f"its tie to the label did not carry over from training: {self.measure()} "
                f"{self.train:+.2f} on the {self.train_rows:,} training rows (data.train), "
                f"{self.audit:+.2f} on these {self.audit_rows:,} rows (a fall beyond chance: "
                f"one-sided p {_p_value(self.p)}, Fisher's z = {self.z:.1f})")

    def measure(self) -> str:
        if not self.levels:
            return "correlation with the label"
        return (f"read as {self.levels} codes, the label's correlation with their mean labels "
                "in training (each training row's own label left out)")


def _p_value(p: float) -> str:
    """"= 0.0021", or "< 1e-06" below what the normal approximation can be trusted to."""
    return f"= {p:.2g}" if p >= 1e-6 else "< 1e-06"


def tie_shifts(train: LabelTies, audit: LabelTies, features: list[str], tested: list[str],
               level: float) -> dict[str, TieShift]:
    """The test of each feature in ``tested``, Bonferroni over ``len(tested)``; empty when a
    side has too few rows to test."""
    if not tested or train.rows < MIN_ROWS or audit.rows < MIN_ROWS:
        return {}
    r_train, r_audit = train.pearson.correlation(), audit.pearson.correlation()
    spread = math.sqrt(1 / (train.rows - 3) + 1 / (audit.rows - 3))
    critical = normal_quantile(1 - level / len(tested))
    # A training tie beyond chance: two-sided, at the same level.
    tied = normal_quantile(1 - level / len(tested) / 2) / math.sqrt(train.rows - 3)
    found = {}
    for name in tested:
        j = features.index(name)
        tie_t, tie_a, levels = float(r_train[j]), float(r_audit[j]), 0
        codes, seen = train.levels.coded(j), audit.levels.levels[j]
        if codes is not None and seen is not None:
            # The training rows' coding, oriented by them: a positive tie is theirs.
            tie_t, tie_a, levels = held_out_coding_tie(codes), coding_tie(codes, seen), len(codes)
        sign = 1.0 if tie_t >= 0 or levels else -1.0
        # atanh of +-1 is infinite: a tie held exactly is kept just inside it.
        z_train, z_audit = (float(np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12)))
                            for r in (tie_t, tie_a))
        z = sign * (z_train - z_audit) / spread
        found[name] = TieShift(feature=name, train=tie_t, audit=tie_a, train_rows=train.rows,
                               audit_rows=audit.rows, z=z, p=normal_cdf(-z), fell=z > critical,
                               held=abs(z_train) > tied and z < NO_FALL, levels=levels,
                               critical=critical)
    return found
