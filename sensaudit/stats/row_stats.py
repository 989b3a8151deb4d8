"""Mergeable accumulators for the checks beyond the gradient ranking.

Like :mod:`sensaudit.stats.accumulators`, each has ``update`` and ``merge`` and gives the
single-pass answer on any partition of the rows (tests/test_merge.py): feature ranges (the attack's
bounds), log-scale histograms (medians and spreads of values spanning decades, such as Jacobian
norms), and per-row columns kept by row number (robustness.csv and its exact percentiles).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pyarrow as pa
import torch


class FeatureRange:
    """Per-feature minimum and maximum (float64) of the rows seen."""

    def __init__(self, n_features: int):
        self.minimum = torch.full((n_features,), math.inf, dtype=torch.float64)
        self.maximum = torch.full((n_features,), -math.inf, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        """x: float [rows, features]; NaN entries are ignored."""
        if x.shape[0] == 0:
            return
        x = x.detach()
        # In the values' own dtype (a minimum is exact in any), widened after: a third of the
        # traffic of widening the chunk first. amin and amax apart: aminmax over dim 0 is ten
        # times slower on CPU than the two. NaN propagates through both, so a chunk holding
        # one takes the slow path that ignores it.
        low, high = x.amin(0), x.amax(0)
        if bool(low.isnan().any() or high.isnan().any()):
            x = x.to("cpu", torch.float64)
            low, high = x.nan_to_num(math.inf).amin(0), x.nan_to_num(-math.inf).amax(0)
        self.minimum = torch.minimum(self.minimum, low.to("cpu", torch.float64))
        self.maximum = torch.maximum(self.maximum, high.to("cpu", torch.float64))

    def merge(self, other: FeatureRange) -> None:
        self.minimum = torch.minimum(self.minimum, other.minimum)
        self.maximum = torch.maximum(self.maximum, other.maximum)


class LogHistogram:
    """Quantiles of non-negative values spanning many decades, to ``RESOLUTION`` decades.

    Positive values are counted in bins of 10**-4 decades (0.023% apart) of log10(value),
    stored sparsely; zeros are counted apart. Quantiles are the inverse CDF at bin centres,
    clamped to the exact minimum and maximum (so a constant value is returned exactly).
    """

    RESOLUTION = 1e-4

    def __init__(self) -> None:
        self.count = 0
        self.zeros = 0
        self.bins: Counter[int] = Counter()
        self.minimum = math.inf
        self.maximum = -math.inf
        self.sum_log10 = 0.0  # over the positive values: their geometric mean

    def update(self, values: torch.Tensor | np.ndarray) -> None:
        """values: float [n], finite and >= 0 (others are the caller's to leave out)."""
        v = np.asarray(values.detach().cpu().double() if isinstance(values, torch.Tensor)
                       else values, dtype=np.float64).reshape(-1)
        if v.size == 0:
            return
        self.count += v.size
        self.minimum = min(self.minimum, float(v.min()))
        self.maximum = max(self.maximum, float(v.max()))
        positive = v[v > 0]
        self.zeros += v.size - positive.size
        if positive.size:
            logs = np.log10(positive)
            self.sum_log10 += float(logs.sum())
            index, counts = np.unique(np.floor(logs / self.RESOLUTION).astype(np.int64),
                                      return_counts=True)
            self.bins.update(dict(zip(index.tolist(), counts.tolist(), strict=True)))

    def merge(self, other: LogHistogram) -> None:
        self.count += other.count
        self.zeros += other.zeros
        self.bins.update(other.bins)
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        self.sum_log10 += other.sum_log10

    def quantile(self, q: float) -> float:
        """The smallest value with at least a fraction q of the values at or below it."""
        if self.count == 0:
            return math.nan
        rank = max(1, math.ceil(q * self.count))  # the rank-th smallest value, 1-based
        if rank <= self.zeros:
            return 0.0
        seen = self.zeros
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen >= rank:
                centre = 10 ** ((index + 0.5) * self.RESOLUTION)
                return min(max(centre, self.minimum), self.maximum)
        return self.maximum

    @property
    def geometric_mean(self) -> float:
        """Of the positive values (nan when there are none)."""
        positive = self.count - self.zeros
        return 10 ** (self.sum_log10 / positive) if positive else math.nan


class RowColumns:
    """Per-row figures kept by row number: float64 columns of equal width per row, and the
    rows' ids. Merging concatenates; :meth:`sorted` orders by row number, so the result is the
    same whichever partition saw a row."""

    def __init__(self, names: list[str]):
        self.names = names
        self._rows: list[np.ndarray] = []
        self._ids: list[pa.Array] = []
        self._values: list[np.ndarray] = []

    def update(self, rows: np.ndarray, ids: pa.Array | np.ndarray,
               values: np.ndarray) -> None:
        """rows: int64 [n]; ids: [n]; values: float64 [n, len(names)]."""
        self._rows.append(np.asarray(rows, dtype=np.int64))
        self._ids.append(ids if isinstance(ids, pa.Array) else pa.array(np.asarray(ids)))
        self._values.append(np.asarray(values, dtype=np.float64).reshape(len(rows), -1))

    def merge(self, other: RowColumns) -> None:
        self._rows += other._rows
        self._ids += other._ids
        self._values += other._values

    def __len__(self) -> int:
        return sum(len(r) for r in self._rows)

    def sorted(self) -> tuple[np.ndarray, list[object], np.ndarray]:
        """(row numbers [n], ids [n] as Python values, values [n, columns]) by row number."""
        if not self._rows:
            return (np.zeros(0, dtype=np.int64), [],
                    np.zeros((0, len(self.names)), dtype=np.float64))
        rows = np.concatenate(self._rows)
        order = np.argsort(rows, kind="stable")
        parts = [_common(a) for a in self._ids]
        if len({a.type for a in parts}) > 1:  # e.g. int ids in one chunk, text in another
            parts = [a.cast(pa.string()) for a in parts]
        ids = pa.concat_arrays(parts).take(pa.array(order))
        return rows[order], ids.to_pylist(), np.concatenate(self._values)[order]


def _common(ids: pa.Array) -> pa.Array:
    # Chunks whose ids were all missing arrive typed null: strings concatenate with anything.
    return ids.cast(pa.string()) if pa.types.is_null(ids.type) else ids
