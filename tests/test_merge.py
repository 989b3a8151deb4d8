"""Every accumulator merges exactly: rows split into k random partitions (not contiguous runs),
each accumulated on its own and merged, give the single-pass result (to float64 rounding; the
bootstrap weights bit for bit, since they are a function of (seed, replicate, row))."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from sensaudit.checks.completeness import CompletenessGap
from sensaudit.checks.proxy_harm import LabelledSample
from sensaudit.inputs.table_chunks import Chunk
from sensaudit.methods.base import Attributions
from sensaudit.pipeline.baselines import FeatureSummary
from sensaudit.pipeline.compare import add_bootstrap
from sensaudit.pipeline.examples import ExampleDrivers, LabelScale
from sensaudit.pipeline.pass_state import Compared
from sensaudit.pipeline.plan import Statistics
from sensaudit.settings.sections import CompareSettings
from sensaudit.stats.accumulators import (
    AgreementAccumulator,
    AttributionSums,
    FeatureMoments,
    PoissonBootstrap,
    TopRows,
    finite_rows,
)
from sensaudit.stats.bootstrap_sums import BootstrapMoments, BootstrapSensitivity
from sensaudit.stats.bucket_bootstrap import BucketBootstrap
from sensaudit.stats.label_correlation import LabelCorrelation, LabelTies
from sensaudit.stats.row_stats import FeatureRange

ROWS, OUTPUTS, FEATURES = 203, 2, 5
TOL = dict(rtol=1e-12, atol=1e-12)


def _rows() -> dict:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(ROWS, FEATURES, generator=generator, dtype=torch.float64) * 3 + 10
    values = torch.randn(ROWS, OUTPUTS, FEATURES, generator=generator, dtype=torch.float64)
    # Exact ties: the kept rows must not depend on which partition saw a row first.
    values[40] = values[41] = values[120] = values.abs().max() * 2
    values[17, 1, 2] = float("nan")  # non-finite rows are counted and named, also when merged
    values[150, 0, 0] = float("inf")
    scores = torch.randn(ROWS, OUTPUTS, generator=generator, dtype=torch.float64)
    new_values = values + 0.1 * torch.randn(ROWS, OUTPUTS, FEATURES, generator=generator,
                                            dtype=torch.float64)
    rows = np.arange(1, ROWS + 1, dtype=np.int64) * 3  # row numbers need not be contiguous
    ids = pa.array([f"r{r}" for r in rows])
    labels = (scores[:, 0] > 0).double().numpy()
    labels[::5] = np.nan  # rows without a label are never "misscored"
    labels[[60, 61, 62]] = 5.0  # and exact ties: the same |score - label|, as with scores
    scores[[60, 61, 62]] = 0.5
    return dict(x=x, values=values, new_values=new_values, scores=scores, rows=rows, ids=ids,
                labels=labels)


def _partitions(k: int, seed: int) -> list[np.ndarray]:
    """k random, non-contiguous partitions of the row positions (some may be empty)."""
    owner = np.random.default_rng(seed).integers(0, k, size=ROWS)
    return [np.flatnonzero(owner == part) for part in range(k)]


def _take(data: dict, index: np.ndarray) -> dict:
    t = torch.from_numpy(index)
    return dict(x=data["x"][t], values=data["values"][t], new_values=data["new_values"][t],
                scores=data["scores"][t], rows=data["rows"][index],
                ids=data["ids"].take(pa.array(index, type=pa.int64())),
                labels=data["labels"][index])


SPLITS = [(2, 0), (3, 1), (7, 2), (12, 3)]


def _single_and_merged(build, feed, k: int, seed: int):
    data = _rows()
    single = build()
    feed(single, data)
    merged = build()
    for index in _partitions(k, seed):
        part = build()
        feed(part, _take(data, index))
        merged.merge(part)
    return single, merged


@pytest.mark.parametrize("k,seed", SPLITS)
def test_feature_moments_merge(k, seed):
    single, merged = _single_and_merged(lambda: FeatureMoments(FEATURES),
                                        lambda acc, d: acc.update(d["x"]), k, seed)
    assert merged.count == single.count == ROWS
    torch.testing.assert_close(merged.mean, single.mean, **TOL)
    torch.testing.assert_close(merged.std, single.std, **TOL)
    np.testing.assert_allclose(single.std.numpy(), _rows()["x"].numpy().std(0, ddof=1), **TOL)


@pytest.mark.parametrize("k,seed", SPLITS)
def test_label_correlation_merge(k, seed):
    def feed(acc, d):
        acc.update(d["x"].numpy(), d["labels"] + d["scores"][:, 0].numpy())

    single, merged = _single_and_merged(lambda: LabelCorrelation(FEATURES), feed, k, seed)
    data = _rows()
    known = np.isfinite(data["labels"])  # rows without a label are left out
    assert merged.rows == single.rows == int(known.sum())
    y = (data["labels"] + data["scores"][:, 0].numpy())[known]
    expected = [np.corrcoef(data["x"].numpy()[known, j], y)[0, 1] for j in range(FEATURES)]
    np.testing.assert_allclose(merged.correlation(), single.correlation(), **TOL)
    np.testing.assert_allclose(single.correlation(), expected, **TOL)


@pytest.mark.parametrize("k,seed", SPLITS)
def test_label_ties_merge(k, seed):
    """LabelTies: Pearson's r and, for columns of few values, LevelSums' per-level sums."""
    def feed(acc, d):
        x = d["x"].numpy().copy()
        x[:, 0] = np.round(x[:, 0] / 3)  # a handful of codes
        acc.update(x, d["labels"] + d["scores"][:, 0].numpy())

    single, merged = _single_and_merged(lambda: LabelTies(FEATURES), feed, k, seed)
    assert merged.rows == single.rows
    np.testing.assert_allclose(merged.pearson.correlation(), single.pearson.correlation(),
                               **TOL)
    coded, whole = merged.levels.coded(0), single.levels.coded(0)
    assert coded is not None and whole is not None and coded.keys() == whole.keys()

    def absolute(sums: np.ndarray, shift: float) -> np.ndarray:
        """[rows, label sum, label sum of squares] of the label itself (stored less a shift
        each partial chose)."""
        n, s, q = sums
        return np.array([n, s + n * shift, q + 2 * shift * s + n * shift**2])

    for value in whole:
        np.testing.assert_allclose(absolute(coded[value], merged.levels.shift),
                                   absolute(whole[value], single.levels.shift), rtol=1e-9)
    assert merged.levels.coded(1) is None  # continuous


@pytest.mark.parametrize("k,seed", SPLITS)
def test_attribution_sums_merge(k, seed):
    def feed(acc, d):
        acc.update(d["rows"], d["ids"], d["scores"], d["values"])

    single, merged = _single_and_merged(lambda: AttributionSums(OUTPUTS, FEATURES), feed, k,
                                        seed)
    for name in ("sum", "sum_abs", "sum_sq", "score_sum"):
        torch.testing.assert_close(getattr(merged, name), getattr(single, name), **TOL)
    assert (merged.rows, merged.nonfinite_rows) == (single.rows, single.nonfinite_rows) == (
        ROWS - 2, 2)
    assert merged.nonfinite_ids == single.nonfinite_ids == ["r54", "r453"]  # positions 17, 150


def test_top_rows_merge_keeps_the_same_items_whatever_the_order():
    items = [(float(v), row, 0) for row, v in enumerate([5, 1, 5, 3, 5, 2, 4, 5], start=1)]
    single: TopRows[int] = TopRows(3)
    for value, row, output in items:
        single.offer(value, row, output, lambda row=row: row)
    merged: TopRows[int] = TopRows(3)
    for part in (items[5:], items[0:5:2], items[1:5:2]):  # rows 6-8, 1 3 5, 2 4
        other: TopRows[int] = TopRows(3)
        for value, row, output in part:
            other.offer(value, row, output, lambda row=row: row)
        merged.merge(other)
    # Four rows hold the top value 5: the three lowest row numbers win, best first.
    assert single.best_first() == merged.best_first() == [1, 3, 5]


@pytest.mark.parametrize("k,seed", SPLITS)
@pytest.mark.parametrize("proxies", [[], ["c"]])
@pytest.mark.parametrize("per_unit", [True, False])
def test_example_drivers_merge(k, seed, proxies, per_unit):
    baseline = torch.tensor([10.0, 9.0, 11.0, 10.5, 8.0], dtype=torch.float64)

    def build():
        return ExampleDrivers(list("abcde"), ["p", "q"], top_k=2, proxies=proxies, keep=6,
                              baseline=baseline, per_unit=per_unit)

    def feed(acc, d):
        acc.add(d["rows"], d["ids"], d["labels"], d["scores"], d["values"],
                finite_rows(d["scores"], d["values"]), d["x"], table=False)

    single, merged = _single_and_merged(build, feed, k, seed)
    assert [vars(e) for e in merged.best_first()] == [vars(e) for e in single.best_first()]
    # Per output: 6 rows for the proxies (or strongest), 6 scored furthest from their label.
    assert len(single.best_first()) == 24
    assert {e.reason for e in single.best_first()} == {
        "proxies" if proxies else "strongest", "misscored"}


def test_bootstrap_weights_are_a_function_of_the_row_alone():
    bootstrap = PoissonBootstrap(50, seed=11)
    rows = _rows()["rows"]
    whole = bootstrap.weights(rows)
    for index in _partitions(5, 4):
        assert torch.equal(bootstrap.weights(rows[index]), whole[:, index])


@pytest.mark.parametrize("k,seed", SPLITS)
@pytest.mark.parametrize("buckets", [None, 16])  # rows mostly alone; 13 rows to a bucket
def test_bucket_bootstrap_merge(k, seed, buckets):
    def feed(acc, d):
        values = [d["values"], d["new_values"]]
        acc.update(d["rows"], d["x"], values, [finite_rows(d["scores"], v) for v in values])

    single, merged = _single_and_merged(
        lambda: BucketBootstrap(40, seed=3, n_features=FEATURES, buckets=buckets), feed, k, seed)
    assert torch.equal(merged.rows, single.rows) and single.rows.sum() == ROWS
    a, b = single.resampled(), merged.resampled()
    torch.testing.assert_close(b.std, a.std, **TOL)
    for model in (0, 1):
        for per_unit in (True, False):
            torch.testing.assert_close(b.shares(model, per_unit), a.shares(model, per_unit),
                                       **TOL)


@pytest.mark.parametrize("k,seed", SPLITS)
def test_agreement_merge(k, seed):
    def feed(acc, d):
        finite = (finite_rows(d["scores"], d["values"])
                  & finite_rows(d["scores"], d["new_values"]))
        acc.update(d["rows"], d["ids"], d["scores"], d["scores"] * 1.5 + 0.1, d["values"],
                   d["new_values"], finite)

    single, merged = _single_and_merged(lambda: AgreementAccumulator(OUTPUTS, keep=4), feed, k,
                                        seed)
    for output, name in enumerate(["p", "q"]):
        a, b = single.summary(output, name), merged.summary(output, name)
        assert a["least_agreeing_rows"] == b["least_agreeing_rows"]
        assert a["most_moved_rows"] == b["most_moved_rows"]
        np.testing.assert_allclose(list(a["cosine"].values()), list(b["cosine"].values()), **TOL)
        np.testing.assert_allclose(list(a["score_change"].values()),
                                   list(b["score_change"].values()), **TOL)
    assert np.array_equal(single.histogram, merged.histogram)
    assert merged.rows == single.rows == ROWS - 2


@pytest.mark.parametrize("k,seed", SPLITS)
@pytest.mark.parametrize("keep", [ROWS + 10, 50])  # every row kept (exact), or a sample
def test_feature_summary_merge(k, seed, keep):
    def feed(acc, d):
        acc.update(d["rows"], d["x"])

    single, merged = _single_and_merged(lambda: FeatureSummary(FEATURES, median=True,
                                                               keep=keep), feed, k, seed)
    a, b = single.reference(), merged.reference()
    # The same rows are sampled whatever the partition: the medians agree bit for bit.
    assert np.array_equal(merged.sample.rows, single.sample.rows)
    assert torch.equal(a.median, b.median)
    assert a.median_exact == b.median_exact == (keep > ROWS)
    torch.testing.assert_close(b.mean, a.mean, **TOL)
    torch.testing.assert_close(b.std, a.std, **TOL)
    if keep > ROWS:
        np.testing.assert_array_equal(a.median.numpy(), np.median(_rows()["x"].numpy(), 0))


@pytest.mark.parametrize("k,seed", SPLITS)
def test_completeness_gap_merge(k, seed):
    baseline_scores = torch.tensor([0.5, -1.0], dtype=torch.float64)

    def feed(acc, d):
        acc.update(Attributions(scores=d["scores"], values=d["values"],
                                baseline_scores=baseline_scores))

    single, merged = _single_and_merged(lambda: CompletenessGap(OUTPUTS), feed, k, seed)
    assert merged.rows == single.rows == ROWS - 2
    for output in range(OUTPUTS):
        np.testing.assert_allclose(list(merged.figures(output).values()),
                                   list(single.figures(output).values()), **TOL)
    data = _rows()
    finite = finite_rows(data["scores"], data["values"])
    gap = (data["values"][finite].sum(2) - (data["scores"][finite] - baseline_scores)).abs()
    torch.testing.assert_close(single.max_abs_gap, gap.amax(0), rtol=0, atol=0)
    torch.testing.assert_close(single.sum_abs_gap, gap.sum(0), **TOL)


@pytest.mark.parametrize("k,seed", SPLITS)
def test_label_scale_merge(k, seed):
    # Scores that are logits of a 0/1 label: the merged reading is the single pass's.
    def feed(acc, d):  # the labels made 0/1 (or missing)
        labels = np.where(np.isfinite(d["labels"]), (d["labels"] > 0.5).astype(np.float64),
                          np.nan)
        acc.update(d["scores"] * 40, labels, finite_rows(d["scores"], d["values"]).numpy())

    single, merged = _single_and_merged(LabelScale, feed, k, seed)
    assert (merged.binary, merged.low, merged.high) == (single.binary, single.low, single.high)
    assert single.logits and merged.logits
    # A label other than 0/1 in any partition makes the whole file not binary.
    other, part = LabelScale(), LabelScale()
    part.update(torch.zeros(2, 1), np.array([0.0, 2.0]), np.array([True, True]))
    assert not part.binary
    other.merge(part)
    assert not other.binary


@pytest.mark.parametrize("k,seed", SPLITS)
def test_statistics_pass_merge(k, seed):
    def feed(acc, d):
        acc.update(Chunk(first_row=1, x=d["x"], ids=d["ids"], rows=d["rows"],
                         labels=d["labels"], dropped=int((d["rows"] % 7 == 0).sum())))

    single, merged = _single_and_merged(
        lambda: Statistics(FeatureSummary(FEATURES, median=True), FeatureRange(FEATURES)),
        feed, k, seed)
    dropped = int((_rows()["rows"] % 7 == 0).sum())
    assert merged.rows_read == single.rows_read == ROWS + dropped
    assert merged.dropped == single.dropped == dropped > 0
    a, b = single.summary.reference(), merged.summary.reference()
    assert torch.equal(a.median, b.median)
    torch.testing.assert_close(b.mean, a.mean, **TOL)
    torch.testing.assert_close(b.std, a.std, **TOL)
    assert torch.equal(merged.ranges.minimum, single.ranges.minimum)
    assert torch.equal(merged.ranges.maximum, single.ranges.maximum)


@pytest.mark.parametrize("k,seed", SPLITS)
def test_compare_partials_merge(k, seed):
    settings = CompareSettings(bootstrap_samples=40, seed=3)

    def feed(acc, d):
        old = Attributions(d["scores"], d["values"])
        new = Attributions(d["scores"] * 1.5 + 0.1, d["new_values"])
        add_bootstrap(acc.bootstrap, d["rows"], d["x"], [old, new])
        # The agreement arrives with the rows step: a partial may not have one yet.
        acc.agreement = acc.agreement or AgreementAccumulator(OUTPUTS, keep=4)
        finite = (finite_rows(d["scores"], d["values"])
                  & finite_rows(d["scores"], d["new_values"]))
        acc.agreement.update(d["rows"], d["ids"], old.scores, new.scores, old.values,
                             new.values, finite)

    single, merged = _single_and_merged(lambda: Compared.start(settings, FEATURES, keep=4),
                                        feed, k, seed)
    a, b = single.bootstrap.resampled(), merged.bootstrap.resampled()
    torch.testing.assert_close(b.std, a.std, **TOL)
    for model in (0, 1):
        torch.testing.assert_close(b.shares(model, True), a.shares(model, True), **TOL)
    assert merged.agreement is not None and single.agreement is not None
    assert (merged.agreement.summary(0, "p")["least_agreeing_rows"]
            == single.agreement.summary(0, "p")["least_agreeing_rows"])
    assert merged.agreement.rows == single.agreement.rows


@pytest.mark.parametrize("k,seed", SPLITS)
def test_bootstrap_moments_merge(k, seed):
    bootstrap = PoissonBootstrap(40, seed=3)
    single, merged = _single_and_merged(lambda: BootstrapMoments(bootstrap, FEATURES),
                                        lambda acc, d: acc.update(d["rows"], d["x"]), k, seed)
    torch.testing.assert_close(merged.w, single.w, rtol=0, atol=0)
    torch.testing.assert_close(merged.std, single.std, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k,seed", SPLITS)
def test_bootstrap_sensitivity_merge(k, seed):
    bootstrap = PoissonBootstrap(40, seed=3)

    def feed(acc, d):
        acc.update(bootstrap.weights(d["rows"]), d["values"],
                   finite_rows(d["scores"], d["values"]))

    single, merged = _single_and_merged(lambda: BootstrapSensitivity(bootstrap), feed, k, seed)
    scale = torch.rand(40, FEATURES, dtype=torch.float64) + 0.5
    torch.testing.assert_close(merged.shares(scale), single.shares(scale), **TOL)
    torch.testing.assert_close(merged.shares(None), single.shares(None), **TOL)


@pytest.mark.parametrize("k,seed", SPLITS)
def test_labelled_sample_merge(k, seed):
    """The suspects' confirmation sample: the same rows, in the same order, from any split
    (kept to 60 of the 200 rows, so the bottom-k choice is exercised)."""

    def feed(acc, d):
        acc.update(d["rows"], d["x"].numpy(), d["labels"])

    single, merged = _single_and_merged(lambda: LabelledSample(60), feed, k, seed)
    assert single.values is not None and len(single.values) == 60
    np.testing.assert_array_equal(merged.values, single.values)
    np.testing.assert_array_equal(merged.sample.rows, single.sample.rows)
