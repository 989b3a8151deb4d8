"""The contribution sample behind the distribution charts: the same rows and values whatever
the partition (tests/test_merge.py style), uniform over rows, and each kept row's values are
its contributions (attribution x the feature's std)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from sensaudit.pipeline.examples import ExampleDrivers
from sensaudit.stats.accumulators import finite_rows
from sensaudit.stats.row_sample import RowSample, row_priority

ROWS, OUTPUTS, FEATURES = 503, 2, 4
SPLITS = [(2, 0), (5, 1), (11, 2)]


def _data():
    generator = torch.Generator().manual_seed(5)
    values = torch.randn(ROWS, OUTPUTS, FEATURES, generator=generator, dtype=torch.float64)
    values[9, 0, 1] = float("nan")  # a non-finite row is never sampled
    scores = torch.randn(ROWS, OUTPUTS, generator=generator, dtype=torch.float64)
    rows = np.arange(1, ROWS + 1, dtype=np.int64) * 2
    return rows, scores, values


def _partitions(k: int, seed: int) -> list[np.ndarray]:
    owner = np.random.default_rng(seed).integers(0, k, size=ROWS)
    return [np.flatnonzero(owner == part) for part in range(k)]


def _drivers(keep: int) -> ExampleDrivers:
    drivers = ExampleDrivers(list("abcd"), ["p", "q"], top_k=2, proxies=[], keep=0,
                             baseline=torch.zeros(4, dtype=torch.float64), per_unit=True,
                             scale=torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64))
    drivers.sample = RowSample(keep)
    return drivers


def _feed(drivers: ExampleDrivers, rows, scores, values, index: np.ndarray) -> None:
    t = torch.from_numpy(index)
    drivers.add(rows[index], pa.array([f"r{r}" for r in rows[index]]), None, scores[t],
                values[t], finite_rows(scores[t], values[t]),
                torch.zeros(len(index), 4, dtype=values.dtype), table=False)


@pytest.mark.parametrize("k,seed", SPLITS)
@pytest.mark.parametrize("keep", [1, 37, 10_000])
def test_sample_merges_to_the_single_pass(k, seed, keep):
    rows, scores, values = _data()
    single = _drivers(keep)
    _feed(single, rows, scores, values, np.arange(ROWS))
    merged = _drivers(keep)
    for index in _partitions(k, seed):
        part = _drivers(keep)
        # Each partition in chunks of 13 rows: chunking must not matter either.
        for start in range(0, len(index), 13):
            _feed(part, rows, scores, values, index[start : start + 13])
        merged.merge(part)
    a, b = single.contributions(), merged.contributions()
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.seen == b.seen == ROWS - 1
    assert len(a.rows) == min(keep, ROWS - 1)
    assert 20 not in a.rows.tolist()  # position 9 (row number 20) is not finite


def test_sampled_values_are_contributions():
    rows, scores, values = _data()
    drivers = _drivers(50)
    _feed(drivers, rows, scores, values, np.arange(ROWS))
    sample = drivers.contributions()
    positions = sample.rows // 2 - 1
    expected = values[torch.from_numpy(positions)] * torch.tensor([1.0, 2.0, 0.5, 3.0],
                                                                    dtype=torch.float64)
    np.testing.assert_array_equal(sample.values, expected.numpy())
    np.testing.assert_array_equal(sample.feature_values("q", "d"), expected[:, 1, 3].numpy())


def test_priorities_are_distinct_and_spread_evenly():
    rows = np.arange(1, 200_001, dtype=np.int64)
    priority = row_priority(rows)
    assert len(np.unique(priority)) == len(rows)  # a bijection: no two rows tie
    sample = RowSample(2_000)
    for start in range(0, len(rows), 50_000):
        chunk = rows[start : start + 50_000]
        sample.update(chunk, np.zeros((len(chunk), 1, 1)))
    kept = np.sort(sample.rows)
    # A uniform sample of 2,000 of 200,000 rows: about 200 in every tenth of the file.
    counts = np.histogram(kept, bins=10, range=(1, 200_001))[0]
    assert counts.min() > 140 and counts.max() < 260
    assert sample.seen == 200_000


def test_rows_wanted_among_those_offered_are_cut_to_the_few_that_can_enter():
    rows = np.arange(1, 5_001, dtype=np.int64) * 3
    offered = np.random.default_rng(7).random(len(rows)) > 0.3  # others: non-finite, say
    values = rows[:, None].astype(np.float64)
    everything, cut = RowSample(100), RowSample(100)
    for start in range(0, len(rows), 700):
        part, ok = rows[start : start + 700], offered[start : start + 700]
        take = np.flatnonzero(ok & everything.wanted(part))
        everything.update(part[take], values[start:][take], offered=int(ok.sum()))
        fewer = np.flatnonzero(cut.wanted(part, among=ok))
        assert len(fewer) <= 100 and set(fewer) <= set(take)
        cut.update(part[fewer], values[start:][fewer], offered=int(ok.sum()))
        if start == 0:
            assert len(take) > 400 and len(fewer) == 100  # the first chunk: all wanted, or 100
    np.testing.assert_array_equal(cut.rows, everything.rows)
    np.testing.assert_array_equal(cut.values, everything.values)
    assert cut.seen == everything.seen == int(offered.sum())
