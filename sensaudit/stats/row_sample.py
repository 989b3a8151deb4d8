"""A bounded, mergeable uniform sample of rows: the rows' contribution vectors for the charts
of how contributions spread over rows, and the rows' features for a median baseline
(:mod:`sensaudit.pipeline.baselines`).

Each row gets a pseudo-random priority from its row number (the splitmix64 finaliser, a
bijection on 64-bit integers, so two rows never tie), and the sample keeps the ``keep`` rows
with the smallest priorities: a bottom-k sketch. Which rows are kept depends only on the row
numbers, never on how the rows were chunked or partitioned, so partial samples merge exactly
into the single-pass one (tests/test_row_sample.py, tests/test_merge.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sensaudit.stats.accumulators import splitmix64

DEFAULT_KEEP = 2_000


def row_priority(rows: np.ndarray, salt: int = 0) -> np.ndarray:
    """uint64 [rows]: splitmix64 of each int64 row number xor ``salt`` (uniform, and distinct
    rows never tie). Samples with different salts keep unrelated rows."""
    with np.errstate(over="ignore"):
        return splitmix64(rows.astype(np.uint64) ^ np.uint64(salt))


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
    """Keeps the ``keep`` rows with the smallest :func:`row_priority`, with each row's values
    (any shape per row); ``update`` per chunk, ``merge`` partial samples. The kept rows are in
    priority order, so equal samples hold equal arrays."""

    def __init__(self, keep: int = DEFAULT_KEEP, *, salt: int = 0):
        if keep < 1:
            raise ValueError(f"RowSample keeps at least 1 row (got {keep})")
        self.keep = keep
        self.salt = salt
        self.priority = np.empty(0, dtype=np.uint64)
        self.rows = np.empty(0, dtype=np.int64)
        self.values: np.ndarray | None = None  # float64 [kept, ...], e.g. [kept, outputs, features]
        self.seen = 0

    @property
    def exact(self) -> bool:
        """True while the sample holds every row seen."""
        return self.seen <= self.keep

    def wanted(self, rows: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
        """bool [rows]: the rows that would enter the sample now (compute only their values).

        ``among``: bool [rows], the rows that will be offered (the others are not); the answer
        is then also cut to their ``keep`` smallest priorities, since a row with ``keep``
        smaller ones beside it in the same offer can never be kept (a first chunk's 100,000
        rows would otherwise all be widened for a sample of 2,000)."""
        priority = row_priority(rows, self.salt)
        full = len(self.priority) >= self.keep
        if among is None:
            if not full:
                return np.ones(len(rows), dtype=bool)
            below: np.ndarray = priority < self.priority.max()
            return below
        wanted: np.ndarray = np.asarray(among, dtype=bool).copy()
        if full:
            wanted &= priority < self.priority.max()
        offered = np.flatnonzero(wanted)
        if len(offered) > self.keep:  # priorities never tie: exactly keep rows stay
            cut = np.partition(priority[offered], self.keep - 1)[self.keep - 1]
            wanted &= priority <= cut
        return wanted

    def update(self, rows: np.ndarray, values: np.ndarray, offered: int | None = None) -> None:
        """rows: int64 [n] row numbers (distinct); values: float64 [n, ...] (cast to float64).
        ``offered``: how many rows this chunk had before :meth:`wanted` filtered it (counted
        in ``seen``; default n)."""
        rows = np.asarray(rows, dtype=np.int64)
        self.seen += len(rows) if offered is None else offered
        self._add(row_priority(rows, self.salt), rows, np.asarray(values, dtype=np.float64))

    def merge(self, other: RowSample) -> None:
        self.seen += other.seen
        if other.values is not None:
            self._add(other.priority, other.rows, other.values)

    def _add(self, priority: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
        if len(self.priority) == self.keep and len(priority):
            # Full: only rows below the largest kept priority can enter (none tie).
            enter = priority < self.priority.max()
            priority, rows, values = priority[enter], rows[enter], values[enter]
        if not len(rows):
            return
        if self.values is not None:
            priority = np.concatenate([self.priority, priority])
            rows = np.concatenate([self.rows, rows])
            values = np.concatenate([self.values, values])
        kept = np.argsort(priority, kind="stable")[: self.keep]
        self.priority, self.rows, self.values = priority[kept], rows[kept], values[kept]

    def result(self, features: list[str], outputs: list[str]) -> ContributionSample:
        order = np.argsort(self.rows, kind="stable")
        values = (self.values[order] if self.values is not None
                  else np.empty((0, len(outputs), len(features))))
        return ContributionSample(rows=self.rows[order], values=values, features=features,
                                  outputs=outputs, seen=self.seen)
