"""The per-chunk statistics work in reused float64 memory (sensaudit.stats.scratch) and take
shortcuts (amin/amax, abs-then-amax, in-place centring): every figure must stay the one the
plain formula gives, bit for bit, whatever the buffer held before and whatever the dtype."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sensaudit.pipeline.example_candidates import _largest_magnitude
from sensaudit.stats.accumulators import AttributionSums, FeatureMoments
from sensaudit.stats.row_stats import FeatureRange
from sensaudit.stats.scratch import widened

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# (rows, features): a large chunk first, so the smaller ones reuse a buffer holding its values.
SHAPES = [(3_001, 37), (1, 5), (257, 64), (2, 1), (1_000, 3)]


def _values(rows: int, features: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scale = 10.0 ** torch.randint(-3, 4, (features,), generator=generator)
    x = torch.randn(rows, features, generator=generator, dtype=torch.float64) * scale + 7
    return x.to(dtype)


def test_widened_is_a_float64_copy_in_reused_memory():
    big = _values(500, 8, torch.float32, 0)
    first = widened(big)
    assert first.dtype == torch.float64 and torch.equal(first, big.double())
    small = _values(20, 3, torch.float32, 1)
    second = widened(small)
    assert torch.equal(second, small.double()) and second.shape == (20, 3)
    assert second.data_ptr() == first.data_ptr()  # the same memory, not a fresh block


def test_widened_never_aliases_its_input():
    x = _values(50, 4, torch.float64, 2)
    kept = x.clone()
    wide = widened(x)
    wide.add_(1.0)
    assert torch.equal(x, kept)


def test_a_strided_input_keeps_its_strides():
    x = _values(40, 6, torch.float32, 3).T  # not contiguous
    wide = widened(x)
    assert torch.equal(wide, x.double()) and wide.stride() == x.double().stride()


@pytest.mark.parametrize("dtype", DTYPES)
def test_feature_moments_are_the_two_pass_formula_bit_for_bit(dtype):
    for seed, (rows, features) in enumerate(SHAPES):
        x = _values(rows, features, dtype, seed)
        kept = x.clone()
        moments = FeatureMoments(features)
        moments.update(x)
        wide = x.double()
        mean = wide.mean(0)
        assert torch.equal(moments.centred, mean)
        assert torch.equal(moments.m2, ((wide - mean) ** 2).sum(0))
        assert torch.equal(x, kept)  # the caller's chunk is not centred in place


def test_feature_moments_of_exact_integers_still_shift():
    x = torch.tensor([[2.0**62], [2.0**62 + 1024], [2.0**62 + 2048]], dtype=torch.float64)
    values = np.array([2**62, 2**62 + 3, 2**62 + 6], dtype=np.int64)
    moments = FeatureMoments(1)
    moments.update(x, exact={0: values})
    assert int(moments.shift[0]) == 2**62
    assert moments.centred.tolist() == [3.0] and moments.m2.tolist() == [18.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_attribution_sums_are_the_widened_sums_bit_for_bit(dtype):
    for seed, (rows, features) in enumerate(SHAPES):
        values = _values(rows * 3, features, dtype, seed).reshape(rows, 3, features)
        values[0, 1, 0] = -values[0, 1, 0]  # negatives: |v| and v**2 from the same copy
        scores = _values(rows, 3, dtype, seed + 100)
        kept = values.clone()
        sums = AttributionSums(3, features)
        sums.update(np.arange(rows), list(range(rows)), scores, values)
        wide = values.double()
        assert torch.equal(sums.sum, wide.sum(0))
        assert torch.equal(sums.sum_abs, wide.abs().sum(0))
        assert torch.equal(sums.sum_sq, wide.square().sum(0))
        assert torch.equal(values, kept)


@pytest.mark.parametrize("dtype", DTYPES)
def test_feature_range_is_aminmax_and_skips_nan(dtype):
    x = _values(300, 9, dtype, 4)
    ranges = FeatureRange(9)
    ranges.update(x)
    low, high = torch.aminmax(x, dim=0)
    assert torch.equal(ranges.minimum, low.double()) and torch.equal(ranges.maximum, high.double())
    x[5, 2] = float("nan")
    again = FeatureRange(9)
    again.update(x)
    wide = x.double()
    assert torch.equal(again.minimum, wide.nan_to_num(math.inf).amin(0))
    assert torch.equal(again.maximum, wide.nan_to_num(-math.inf).amax(0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_largest_magnitude_is_the_inf_norm(dtype):
    x = _values(200, 7, dtype, 5)
    x[3, 4] = -1e4
    assert _largest_magnitude(x) == float(torch.linalg.vector_norm(x, ord=math.inf))
    assert _largest_magnitude(x[:0]) == 0.0
