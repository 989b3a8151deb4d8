"""A bounded, mergeable uniform sample of rows' contribution vectors, for the charts of how
contributions spread over rows.

Each row gets a pseudo-random priority from its row number (the splitmix64 finaliser, a
bijection on 64-bit integers, so two rows never tie), and the sample keeps the ``keep`` rows
with the smallest priorities: a bottom-k sketch. Which rows are kept depends only on the row
numbers, never on how the rows were chunked or partitioned, so partial samples merge exactly
into the single-pass one (tests/test_row_sample.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_KEEP = 2_000


def row_priority(rows: np.ndarray) -> np.ndarray:
    """uint64 [rows]: splitmix64 of each int64 row number (uniform, and distinct rows never
    tie)."""
    z = rows.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@dataclass
class ContributionSample:
    """Sampled rows' contributions (attribution in score units: gradient x std for gradient
    methods), sorted by row number.

    rows: int64 [k] row numbers; values: float64 [k, outputs, features]; seen: rows offered
    (finite rows of the whole audit), so a chart can say "k of seen rows".
    """

    rows: np.ndarray
    values: np.ndarray
    features: list[str]
    outputs: list[str]
    seen: int

    def feature_values(self, output: str, feature: str) -> np.ndarray:
        """float64 [k]: one feature's contribution to one output in every sampled row."""
        return self.values[:, self.outputs.index(output), self.features.index(feature)]


class RowSample:
    """Keeps the ``keep`` rows with the smallest :func:`row_priority`; ``update`` per chunk,
    ``merge`` partial samples."""

    def __init__(self, keep: int = DEFAULT_KEEP):
        if keep < 1:
            raise ValueError(f"RowSample keeps at least 1 row (got {keep})")
        self.keep = keep
        self.priority = np.empty(0, dtype=np.uint64)
        self.rows = np.empty(0, dtype=np.int64)
        self.values: np.ndarray | None = None  # float64 [kept, outputs, features]
        self.seen = 0

    def wanted(self, rows: np.ndarray) -> np.ndarray:
        """bool [rows]: the rows that would enter the sample now (compute only their values)."""
        priority = row_priority(rows)
        if len(self.priority) < self.keep:
            return np.ones(len(rows), dtype=bool)
        return priority < self.priority.max()

    def update(self, rows: np.ndarray, values: np.ndarray, offered: int | None = None) -> None:
        """rows: int64 [n] row numbers (distinct); values: float64 [n, outputs, features].
        ``offered``: how many rows this chunk had before :meth:`wanted` filtered it (counted
        in ``seen``; default n)."""
        self.seen += len(rows) if offered is None else offered
        self._add(row_priority(rows), rows.astype(np.int64), values.astype(np.float64))

    def merge(self, other: RowSample) -> None:
        self.seen += other.seen
        if other.values is not None:
            self._add(other.priority, other.rows, other.values)

    def _add(self, priority: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
        if not len(rows):
            return
        if self.values is not None:
            priority = np.concatenate([self.priority, priority])
            rows = np.concatenate([self.rows, rows])
            values = np.concatenate([self.values, values])
        if len(priority) > self.keep:
            kept = np.argpartition(priority, self.keep - 1)[: self.keep]
            priority, rows, values = priority[kept], rows[kept], values[kept]
        self.priority, self.rows, self.values = priority, rows, values

    def result(self, features: list[str], outputs: list[str]) -> ContributionSample:
        order = np.argsort(self.rows, kind="stable")
        values = (self.values[order] if self.values is not None
                  else np.empty((0, len(outputs), len(features))))
        return ContributionSample(rows=self.rows[order], values=values, features=features,
                                  outputs=outputs, seen=self.seen)
