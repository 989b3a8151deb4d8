"""Each feature's correlation with the label over the rows seen, merged over partitions of the
rows in any order (Chan, Golub and LeVeque's pairwise update, per feature: float64 keeps its
precision for columns far from zero, where a plain sum of squares would not).

The suspects check keeps one over the training rows (``data.train``) and one over the audited
rows, and asks whether a feature's tie to the label fell between them
(:mod:`sensaudit.checks.tie_shift`).
"""

from __future__ import annotations

import numpy as np


class LabelCorrelation:
    """Row count, means, and the sums of squared and cross deviations of each feature and the
    label, over rows whose features and label are all finite."""

    def __init__(self, n_features: int):
        self.rows = 0
        self.mean_x = np.zeros(n_features)
        self.mean_y = 0.0
        self.sxx = np.zeros(n_features)
        self.syy = 0.0
        self.sxy = np.zeros(n_features)

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """x: float64 [rows, features]; y: float64 [rows]. Rows with a non-finite value are
        left out."""
        keep = np.isfinite(y) & np.isfinite(x).all(1)
        x, y = x[keep], y[keep]
        if not len(y):
            return
        mean_x, mean_y = x.mean(0), float(y.mean())
        dx, dy = x - mean_x, y - mean_y
        self._combine(len(y), mean_x, mean_y, (dx * dx).sum(0), float(dy @ dy), dy @ dx)

    def merge(self, other: LabelCorrelation) -> None:
        self._combine(other.rows, other.mean_x, other.mean_y, other.sxx, other.syy, other.sxy)

    def _combine(self, rows: int, mean_x: np.ndarray, mean_y: float, sxx: np.ndarray,
                 syy: float, sxy: np.ndarray) -> None:
        if rows == 0:
            return
        total = self.rows + rows
        weight = self.rows * rows / total
        dx, dy = mean_x - self.mean_x, mean_y - self.mean_y
        self.sxx = self.sxx + sxx + dx * dx * weight
        self.syy = self.syy + syy + dy * dy * weight
        self.sxy = self.sxy + sxy + dx * dy * weight
        self.mean_x = self.mean_x + dx * (rows / total)
        self.mean_y = self.mean_y + dy * (rows / total)
        self.rows = total

    def correlation(self) -> np.ndarray:
        """[features]: Pearson's r of each feature with the label; 0 where either is
        constant (no tie can be measured)."""
        scale = np.sqrt(self.sxx * self.syy)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(scale > 0, self.sxy / np.where(scale > 0, scale, 1.0), 0.0)
        return np.clip(r, -1.0, 1.0)


# A feature of at most this many distinct values is read as codes (levels): its tie to the
# label is taken through its levels' label means, which sees codes in any order.
LEVELS = 16


class LevelSums:
    """Per feature of at most ``LEVELS`` distinct values: each value's row count, and the sum
    and sum of squares of the label (less a fixed ``shift``, so a label far from 0 keeps its
    precision) over its rows; a feature with more values is dropped (None). Rows with a
    non-finite value are left out, as LabelCorrelation leaves them."""

    def __init__(self, n_features: int):
        self.shift: float | None = None
        self.levels: list[dict[float, np.ndarray] | None] = [{} for _ in range(n_features)]

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """x: float64 [rows, features]; y: float64 [rows]."""
        keep = np.isfinite(y) & np.isfinite(x).all(1)
        x, y = x[keep], y[keep]
        if not len(y):
            return
        if self.shift is None:
            self.shift = float(y.mean())
        y = y - self.shift
        for j, known in enumerate(self.levels):
            if known is None:
                continue
            # A continuous column shows it in its first rows: no sort of the whole chunk.
            if len(np.unique(x[:1024, j])) > LEVELS:
                self.levels[j] = None
                continue
            values, index = np.unique(x[:, j], return_inverse=True)
            if len(values) > LEVELS:
                self.levels[j] = None
                continue
            sums = np.stack([np.bincount(index, minlength=len(values)).astype(float),
                             np.bincount(index, y, len(values)),
                             np.bincount(index, y * y, len(values))], 1)
            self._add(j, dict(zip(values.tolist(), sums, strict=True)))

    def merge(self, other: LevelSums) -> None:
        if other.shift is None:
            return
        if self.shift is None:
            self.shift = other.shift
        d = other.shift - self.shift  # other's label less d is ours
        for j, found in enumerate(other.levels):
            if found is None:
                self.levels[j] = None
            elif self.levels[j] is not None:
                self._add(j, {v: np.array([n, s + n * d, q + 2 * d * s + n * d * d])
                              for v, (n, s, q) in found.items()})

    def _add(self, j: int, found: dict[float, np.ndarray]) -> None:
        known = self.levels[j]
        if known is None:
            return
        for value, sums in found.items():
            known[value] = known[value] + sums if value in known else sums.copy()
        if len(known) > LEVELS:
            self.levels[j] = None

    def coded(self, j: int) -> dict[float, np.ndarray] | None:
        """Feature j's levels ({value: [rows, label sum, label sum of squares]}, the label
        less ``shift``), or None when it has more than LEVELS values or fewer than 3 (two
        values are a line: Pearson's r already is their tie)."""
        known = self.levels[j]
        return known if known is not None and len(known) >= 3 else None


def held_out_coding_tie(levels: dict[float, np.ndarray]) -> float:
    """The label's correlation with its level means over the rows the sums came from, each
    row's own label left out of its level's mean (a level of one row takes the mean of all
    other rows): the tie a coding learned from these rows shows on rows it was not learned
    from, without the in-sample fit's upward bias (L - 1 free means on n rows)."""
    sums = np.array(list(levels.values()))
    n, s, q = sums[:, 0], sums[:, 1], sums[:, 2]
    rows, total, squares = n.sum(), s.sum(), q.sum()
    if rows < 3:
        return 0.0
    many = n > 1
    m = np.where(many, n - 1, 1.0)
    # Sums of g (each row's held-out mean), g^2 and y g, per level, then over levels.
    single = (total - s) / (rows - 1)
    sum_g = np.where(many, s, single)
    sum_gg = np.where(many, ((n - 2) * s * s + q) / (m * m), single * single)
    sum_yg = np.where(many, (s * s - q) / m, s * single)
    cov = sum_yg.sum() - sum_g.sum() * total / rows
    var_g = sum_gg.sum() - sum_g.sum() ** 2 / rows
    var_y = squares - total * total / rows
    return float(cov / np.sqrt(var_g * var_y)) if var_g > 0 and var_y > 0 else 0.0


def coding_tie(coding: dict[float, np.ndarray], levels: dict[float, np.ndarray]) -> float:
    """The label's correlation, over the rows ``levels`` sums, with the level means of
    ``coding`` (another set of rows' sums: the training rows'); a value that set never took
    gets its overall mean."""
    train = np.array(list(coding.values()))
    means = dict(zip(coding, train[:, 1] / train[:, 0], strict=True))
    overall = train[:, 1].sum() / train[:, 0].sum()
    sums = np.array(list(levels.values()))
    n, s, q = sums[:, 0], sums[:, 1], sums[:, 2]
    g = np.array([means.get(value, overall) for value in levels])
    rows, total = n.sum(), s.sum()
    if rows < 3:
        return 0.0
    cov = (g * s).sum() - (g * n).sum() * total / rows
    var_g = (n * g * g).sum() - (g * n).sum() ** 2 / rows
    var_y = q.sum() - total * total / rows
    return float(cov / np.sqrt(var_g * var_y)) if var_g > 0 and var_y > 0 else 0.0


class LabelTies:
    """Both measures of each feature's tie to the label over the rows seen: Pearson's r, and
    the level sums of features with few values."""

    def __init__(self, n_features: int):
        self.pearson = LabelCorrelation(n_features)
        self.levels = LevelSums(n_features)

    @property
    def rows(self) -> int:
        return self.pearson.rows

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """x: float64 [rows, features]; y: float64 [rows]."""
        self.pearson.update(x, y)
        self.levels.update(x, y)

    def merge(self, other: LabelTies) -> None:
        self.pearson.merge(other.pearson)
        self.levels.merge(other.levels)
