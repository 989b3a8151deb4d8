"""The standard normal's quantile and distribution function, for the intervals, one-sided tests
and power figures the checks state."""

from __future__ import annotations

import torch


def normal_quantile(p: float) -> float:
    """z with P(Z <= z) = p for a standard normal Z."""
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))


def normal_cdf(z: float) -> float:
    """P(Z <= z) for a standard normal Z."""
    return float(torch.special.ndtr(torch.tensor(z, dtype=torch.float64)))
