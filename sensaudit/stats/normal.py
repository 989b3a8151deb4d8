"""The standard normal's quantile, for the intervals and one-sided tests the checks state."""

from __future__ import annotations

import torch


def normal_quantile(p: float) -> float:
    """z with P(Z <= z) = p for a standard normal Z."""
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))
