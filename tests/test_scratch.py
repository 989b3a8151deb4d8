"""The per-chunk work in reused memory (sensaudit.stats.scratch) and its shortcuts (amin/amax,
max |v| from the extremes, in-place centring, a staged transpose of Parquet columns): every
figure must stay the one the plain formula gives, bit for bit, whatever the buffers held before
and whatever the dtype; and nothing handed out may share a reused buffer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from sensaudit.inputs.table_chunks import MissingValues, _batch_chunk
from sensaudit.inputs.table_layout import Table
from sensaudit.pipeline.example_candidates import ExampleCandidates, _largest_magnitude
from sensaudit.settings.sections import DataConfig
from sensaudit.stats.accumulators import AttributionSums, FeatureMoments
from sensaudit.stats.row_stats import FeatureRange
from sensaudit.stats.scratch import reused, widened

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


def test_slots_are_apart():
    a = reused((10, 4), torch.float32, slot="test.a")
    b = reused((10, 4), torch.float32, slot="test.b")
    c = reused((10, 4), torch.float64, slot="test.a")
    assert len({a.data_ptr(), b.data_ptr(), c.data_ptr()}) == 3
    assert reused((3, 2), torch.float32, slot="test.a").data_ptr() == a.data_ptr()


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


def _keys_by_norms(values, x, baseline, per_unit):
    """The candidates' keys as first written: inf-norms over features."""
    narrow = baseline.to(values.dtype)
    if per_unit:
        diff = x.to(values.dtype) - narrow
        key = torch.linalg.vector_norm(values * diff[:, None, :], ord=math.inf, dim=2)
        bound = torch.linalg.vector_norm(values, ord=math.inf, dim=2)
    else:
        key = torch.linalg.vector_norm(values, ord=math.inf, dim=2)
        bound = torch.zeros(values.shape[:2])
    return key.double().numpy(), bound.double().numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("per_unit", [True, False])
def test_candidate_keys_are_the_inf_norms(dtype, per_unit):
    for seed, (rows, outputs) in enumerate([(900, 3), (5, 1), (300, 2)]):  # big first: stale
        values = _values(rows * outputs, 6, dtype, seed).reshape(rows, outputs, 6)
        values[0, 0] = 0.0  # a row of zeros
        x = _values(rows, 6, torch.float64, seed + 10)  # float64 data, narrower model
        baseline = x.mean(0)
        candidates = ExampleCandidates(outputs, [], keep=3, per_unit=per_unit)
        keys = candidates._keys(values, torch.zeros(rows, outputs, dtype=torch.float64), x,
                                None, baseline)
        key, bound = keys["strongest"]
        expected_key, expected_bound = _keys_by_norms(values, x, baseline, per_unit)
        np.testing.assert_array_equal(key, expected_key)
        np.testing.assert_array_equal(bound, expected_bound)


@pytest.mark.parametrize("shape", [(1, 5), (7, 1), (300, 4), (40, 3)])
def test_parquet_batches_become_fresh_row_major_chunks(shape):
    rows, features = shape
    names = [f"f{j}" for j in range(features)]
    chunks = []
    for seed in range(2):  # the second batch reuses the first one's staging memory
        data = np.random.default_rng(seed).standard_normal((rows, features)).astype(np.float32)
        batch = pa.record_batch([pa.array(data[:, j]) for j in range(features)], names=names)
        table = Table(path=Path("<t>"), features=tuple(names), label=None, id=None,
                      row_count=rows, skipped=())
        chunk = _batch_chunk(batch, table, DataConfig(path=Path("<t>")), 1, torch.float32,
                             MissingValues(table.features))
        assert chunk.x.is_contiguous() and chunk.x.dtype == torch.float32
        np.testing.assert_array_equal(chunk.x.numpy(), data)
        chunks.append((chunk, data))
    first, data = chunks[0]
    np.testing.assert_array_equal(first.x.numpy(), data)  # not overwritten by the second
