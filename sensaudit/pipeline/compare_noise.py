"""Retraining noise for `compare`: how much a feature's share moves when the same model is
trained again with another seed, and the change's interval that adds it to row sampling.

The paired bootstrap of :mod:`sensaudit.pipeline.compare` resamples the audited rows, so its
interval is row-sampling noise only: two models that differ only in their training seed can differ
by more than that. Given retrained copies of either model (``--old-replica`` / ``--new-replica``),
each feature's share has a retraining variance, estimated from the spread of the copies on
the same rows and pooled over both sides (the copies of one side are assumed to come from the
same training as the other's, so they share one variance). The change between two single
models then carries that variance twice; the interval adds it to the bootstrap's, with a
Student t quantile for the few degrees of freedom a handful of seeds give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sensaudit.results.audit_result import AuditResult


@dataclass
class RetrainingNoise:
    """Per output, the pooled standard deviation of one model's share across retraining,
    float [features] in the order of ``AuditResult.features``; and its degrees of freedom."""

    sd: dict[str, np.ndarray]
    dof: int


def retraining_noise(old: list[AuditResult], new: list[AuditResult]) -> RetrainingNoise | None:
    """The spread of each side's models (the model itself first, then its retrained copies)
    on the same rows, pooled; None when neither side has a copy."""
    squares: dict[str, np.ndarray] = {}
    dof = 0
    for side in (old, new):
        if len(side) < 2:
            continue
        features = side[0].features
        for output in side[0].outputs:
            shares = np.stack([
                audit.table[audit.table["output"] == output].set_index("feature")
                .loc[features, "share"].to_numpy(dtype=float) for audit in side])
            deviations = ((shares - shares.mean(0)) ** 2).sum(0)
            squares[output] = squares.get(output, 0) + deviations
        dof += len(side) - 1
    if not dof:
        return None
    return RetrainingNoise(sd={output: np.sqrt(total / dof) for output, total in squares.items()},
                           dof=dof)


def change_interval(delta: np.ndarray, low: np.ndarray | None, high: np.ndarray | None,
                    retraining_sd: np.ndarray | None, dof: int, confidence: float
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """The interval of a change between two single models: the bootstrap's [low, high] (row
    sampling), widened on each side by the retraining noise of both models, t x sd x sqrt(2),
    added in quadrature. None when neither noise was measured."""
    if retraining_sd is None:
        return None if low is None or high is None else (low, high)
    spread = t_quantile((1 + confidence) / 2, dof) * retraining_sd * math.sqrt(2)
    below = np.zeros_like(delta) if low is None else np.maximum(delta - low, 0)
    above = np.zeros_like(delta) if high is None else np.maximum(high - delta, 0)
    return delta - np.hypot(below, spread), delta + np.hypot(above, spread)


def t_quantile(p: float, dof: int) -> float:
    """The p quantile (p > 0.5) of Student's t with an integer ``dof`` >= 1, by bisection on
    its closed-form distribution function."""
    low, high = 0.0, 1.0
    while _t_cdf(high, dof) < p:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if _t_cdf(middle, dof) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _t_cdf(t: float, dof: int) -> float:
    """P(T <= t) for t >= 0: P(|T| < t) by the finite sums for integer degrees of freedom
    (Abramowitz and Stegun 26.7.3 and 26.7.4), theta = atan(t / sqrt(dof))."""
    theta = math.atan(t / math.sqrt(dof))
    c2 = math.cos(theta) ** 2
    if dof % 2:
        term, total = 1.0, 0.0
        if dof > 1:
            total = 1.0
            for k in range(1, (dof - 1) // 2):
                term *= c2 * (2 * k) / (2 * k + 1)
                total += term
        inside = 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total
                                         if dof > 1 else 0.0))
    else:
        term, total = 1.0, 1.0
        for k in range(1, dof // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        inside = math.sin(theta) * total
    return 0.5 + inside / 2
