"""The checks' accumulators merge exactly, as tests/test_merge.py checks the audit's own: rows
split into random partitions, each accumulated (and each check replayed) on its own and merged,
give the single-pass result."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_merge import FEATURES, OUTPUTS, SPLITS, TOL, _rows, _single_and_merged

from sensaudit.checks.base import ModelContext, Ranking, ReplayChunk
from sensaudit.checks.layer_health import LayerHealth
from sensaudit.checks.linearity import Linearity
from sensaudit.checks.monotonicity import Monotonicity
from sensaudit.checks.one_hot import OneHotLevels
from sensaudit.checks.robustness import Robustness
from sensaudit.settings.checks import (
    Expectation,
    FeatureGroup,
    LayerHealthSettings,
    LinearitySettings,
    RobustnessSettings,
)
from sensaudit.settings.sections import AuditSettings
from sensaudit.stats.accumulators import finite_rows
from sensaudit.stats.row_stats import FeatureRange, LogHistogram, RowColumns

NAMES = list("abcde")
OUTPUT_NAMES = ["p", "q"]


@pytest.mark.parametrize("k,seed", SPLITS)
def test_feature_range_merge(k, seed):
    single, merged = _single_and_merged(lambda: FeatureRange(FEATURES),
                                        lambda acc, d: acc.update(d["x"]), k, seed)
    assert torch.equal(merged.minimum, single.minimum)
    assert torch.equal(merged.maximum, single.maximum)
    assert torch.equal(single.minimum, _rows()["x"].amin(0))


@pytest.mark.parametrize("k,seed", SPLITS)
def test_log_histogram_merge(k, seed):
    def feed(acc, d):
        values = d["values"].abs().flatten()
        values = values[torch.isfinite(values)]
        acc.update(torch.where(values < 0.1, 0.0, values))  # zeros are counted apart

    single, merged = _single_and_merged(LogHistogram, feed, k, seed)
    assert (merged.count, merged.zeros, merged.bins) == (single.count, single.zeros,
                                                         single.bins)
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        assert merged.quantile(q) == single.quantile(q)
    assert merged.geometric_mean == pytest.approx(single.geometric_mean, rel=1e-12)


def test_log_histogram_quantiles_are_within_its_resolution():
    values = np.exp(np.random.default_rng(1).normal(0, 5, 5001))
    histogram = LogHistogram()
    histogram.update(values)
    for q in (0.05, 0.5, 0.95):
        exact = np.sort(values)[int(np.ceil(q * len(values))) - 1]
        assert histogram.quantile(q) == pytest.approx(exact, rel=3e-4)
    constant = LogHistogram()
    constant.update(np.full(10, 0.123456789))
    assert constant.quantile(0.5) == 0.123456789  # clamped to the exact min = max


@pytest.mark.parametrize("k,seed", SPLITS)
def test_row_columns_merge(k, seed):
    def feed(acc, d):
        acc.update(d["rows"], d["ids"], d["scores"].numpy())

    single, merged = _single_and_merged(lambda: RowColumns(["p", "q"]), feed, k, seed)
    rows_a, ids_a, values_a = single.sorted()
    rows_b, ids_b, values_b = merged.sorted()
    assert np.array_equal(rows_a, rows_b) and ids_a == ids_b
    assert np.array_equal(values_a, values_b)


# --- each check that replays, on a small nonlinear two-output model ---------------------------

def _model() -> torch.nn.Module:
    torch.manual_seed(2)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 6), torch.nn.Tanh(),
                               torch.nn.Linear(6, OUTPUTS)).double()


def _context(model) -> ModelContext:
    x = _rows()["x"]
    table = pd.DataFrame([{"output": o, "feature": f, "scaled_sensitivity": 0.1 * (j + 1),
                           "share": 0.2, "rank": j + 1}
                          for o in OUTPUT_NAMES for j, f in enumerate(NAMES)])
    return ModelContext(model=model, module=model, output_index=None, std=x.std(0),
                        minimum=x.amin(0), maximum=x.amax(0), features=NAMES,
                        outputs=OUTPUT_NAMES, path="<model>", table=table)


def _replayed(check_type, settings: AuditSettings, k: int, seed: int):
    model = _model()
    context = _context(model)

    def feed(check, d):
        finite = finite_rows(d["scores"], d["values"])
        check.replay(ReplayChunk(rows=d["rows"], ids=d["ids"], x=d["x"], scores=d["scores"],
                                 values=d["values"], finite=finite), context)

    single, merged = _single_and_merged(lambda: check_type.from_settings(settings), feed, k,
                                        seed)
    ranking = Ranking(table=context.table, features=NAMES, outputs=OUTPUT_NAMES)
    return single.finish(ranking), merged.finish(ranking)


def _close(a, b) -> None:
    """Equal, numbers to float rounding: the model scores a row in batches of different
    sizes in each partition, and a matmul's rounding depends on its batch."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _close(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12, nan_ok=True)
    else:
        assert a == b


def _same(a, b) -> None:
    assert [(g.subject, g.output, g.passed) for g in a.gates] == [
        (g.subject, g.output, g.passed) for g in b.gates]
    assert a.findings == b.findings and a.notes == b.notes
    for name in a.tables:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name], check_exact=False,
                                      **TOL)


@pytest.mark.parametrize("k,seed", SPLITS)
def test_monotonicity_merge(k, seed):
    settings = AuditSettings(expect=(Expectation("a", "increasing", 0.4),
                                     Expectation("c", "decreasing", 0.6)))
    single, merged = _replayed(Monotonicity, settings, k, seed)
    _same(single, merged)
    _close(single.summary, merged.summary)  # the worst rows too, ties by row number
    assert single.summary["monotonicity"][0]["worst_rows"]


@pytest.mark.parametrize("k,seed", SPLITS)
def test_robustness_merge(k, seed):
    settings = AuditSettings(robustness=RobustnessSettings(epsilon=0.2, steps=3,
                                                           max_shift=0.5), threshold=0.0)
    single, merged = _replayed(Robustness, settings, k, seed)
    _same(single, merged)
    _close(single.summary, merged.summary)
    assert single.summary["robustness_rows_crossing"]


@pytest.mark.parametrize("k,seed", SPLITS)
def test_linearity_merge(k, seed):
    single, merged = _replayed(Linearity, AuditSettings(linearity=LinearitySettings()), k,
                               seed)
    _same(single, merged)


@pytest.mark.parametrize("k,seed", SPLITS)
def test_one_hot_levels_merge(k, seed):
    settings = AuditSettings(groups=(FeatureGroup("de", ("d", "e"), "one_hot"),))
    single, merged = _replayed(OneHotLevels, settings, k, seed)
    _same(single, merged)


@pytest.mark.parametrize("k,seed", SPLITS)
def test_layer_health_merge(k, seed):
    settings = AuditSettings(layer_health=LayerHealthSettings())
    single, merged = _replayed(LayerHealth, settings, k, seed)
    _same(single, merged)
    _close(single.summary, merged.summary)
