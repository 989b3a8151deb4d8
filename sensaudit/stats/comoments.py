"""Means and the scatter matrix (sum of outer products of deviations) of vectors, merged over
partitions of the rows in any order: Chan, Golub and LeVeque's pairwise update, which keeps
float64's precision for columns far from zero (a sum of squares would not).

Used by the protected-proxies check (checks/protected_proxies.py) for the inputs' covariance
with a protected column, overall and per level of a text column.
"""

from __future__ import annotations

import numpy as np
import torch


class CoMoments:
    """Row count, mean [columns] and scatter [columns, columns] of the rows seen (the scatter
    only when ``scatter`` is true: a level of a text column needs only its count and mean)."""

    def __init__(self, n_columns: int, *, scatter: bool = True):
        self.n_columns = n_columns
        self.rows = 0
        self.mean = np.zeros(n_columns)
        self.scatter: np.ndarray | None = np.zeros((n_columns, n_columns)) if scatter else None

    def update(self, values: np.ndarray) -> None:
        """values: float64 [rows, columns], every value finite."""
        if not len(values):
            return
        mean = values.mean(0)
        scatter = None
        if self.scatter is not None:
            # torch's product, on the threads torch is set to: numpy's BLAS starts its own
            # pool, which on a busy machine fights torch's and ran ~10x slower in an audit.
            centred = torch.from_numpy(values - mean)
            scatter = (centred.T @ centred).numpy()
        self._combine(len(values), mean, scatter)

    def merge(self, other: CoMoments) -> None:
        self._combine(other.rows, other.mean, other.scatter)

    def _combine(self, rows: int, mean: np.ndarray, scatter: np.ndarray | None) -> None:
        if rows == 0:
            return
        total = self.rows + rows
        delta = mean - self.mean
        if self.scatter is not None and scatter is not None:
            self.scatter = self.scatter + scatter + np.outer(delta, delta) * (self.rows * rows
                                                                               / total)
        self.mean = self.mean + delta * (rows / total)
        self.rows = total
