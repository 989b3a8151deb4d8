"""Integer columns larger than the model's inputs hold exactly: one warning per column.

A float with ``p`` significand bits holds every integer up to 2**p exactly (float32: 2**24,
about 16.8 million; float64: 2**53) and rounds larger ones: ids, counters or nanosecond
timestamps near 2**62 reach the model as multiples of 2**(bits beyond p), so rows that differ
in the data can be the same row to the model. The audit's statistics are exact for such columns
(:class:`~sensaudit.stats.accumulators.FeatureMoments` keeps their int64 values), so the warning
names what the model cannot see rather than reporting the column constant.
"""

from __future__ import annotations

import torch

from sensaudit.checks.base import CheckResult, Notice

CHECK = "input_precision"


def exact_limit(dtype: torch.dtype) -> int:
    """The largest n such that every integer up to n is exact in ``dtype`` (2**24, 2**53)."""
    return round(2 / torch.finfo(dtype).eps)


def integer_warnings(features: list[str], integer_max: torch.Tensor,
                     dtype: torch.dtype) -> CheckResult:
    """integer_max: float64 [features], each integer column's largest |value| (-1: not an
    integer column)."""
    result = CheckResult(CHECK)
    if not dtype.is_floating_point:
        return result
    limit = exact_limit(dtype)
    name = str(dtype).replace("torch.", "")
    for j in (integer_max > limit).nonzero().flatten().tolist():
        top = float(integer_max[j])
        # The spacing of dtype's values at the column's magnitude: what the model rounds to.
        spacing = 2.0 ** max(0, int(top).bit_length() - (limit.bit_length() - 1))
        result.warnings.append(Notice(check=CHECK, subject=features[j], output="",
                                      details={"largest_integer": top,
                                               f"exact_in_{name}_up_to": float(limit)}))
        result.findings.append(
            f"**{features[j]}** holds integers up to {top:.4g}, beyond the {limit:,} up to "
            f"which the model's {name} inputs are exact: the model sees its values rounded to "
            f"multiples of {spacing:g}, so values that differ in the data can reach it as one. "
            "Subtract a fixed offset (or rescale) before training and auditing.")
    return result
