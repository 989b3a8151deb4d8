"""Streaming moments and gradient statistics (sensaudit.stats.accumulators,
sensaudit.results.audit_result) against hand
computations, per-example drivers (sensaudit.pipeline.examples), gate rules of the proxy and
dominance checks at their boundaries, and planted proxies found end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from models import MLP, Linear, Quadratic

import sensaudit
from sensaudit import ProxyLimit
from sensaudit.checks.base import Gate, Notice, Ranking
from sensaudit.checks.dominance import Dominance
from sensaudit.checks.proxies import ProxyLimits
from sensaudit.pipeline.examples import ExampleDrivers
from sensaudit.results.audit_result import (
    SENSITIVITY_COLUMNS,
    Gates,
    rank_shares,
    sensitivity_table,
)
from sensaudit.settings.sections import AuditSettings
from sensaudit.stats.accumulators import AttributionSums, FeatureMoments, finite_rows

FEATURES = ["a", "b", "c", "d"]


class GradientAccumulator:
    """The pipeline's per-model pieces in one object, as the tests drive them: attribution sums
    (stats), per-example drivers (examples) and the ranked table (results)."""

    def __init__(self, features, outputs, std, *, top_k=3, proxies=(), keep_examples=10,
                 baseline=None):
        self.features, self.outputs, self.std = list(features), list(outputs), std
        self.sums = AttributionSums(len(outputs), len(features))
        baseline = torch.zeros(len(features), dtype=torch.float64) if baseline is None else baseline
        self.drivers = ExampleDrivers(features, outputs, top_k=top_k, proxies=proxies,
                                      keep=keep_examples, baseline=baseline, per_unit=True)
        self._next_row = 1

    def update(self, ids, scores, jac, x, labels=None):
        rows = np.arange(self._next_row, self._next_row + len(ids), dtype=np.int64)
        self._next_row += len(ids)
        ids = pa.array(list(ids))
        self.sums.update(rows, ids, scores, jac)
        table = self.drivers.add(rows, ids, labels, scores, jac, finite_rows(scores, jac), x,
                                 table=True)
        return table.to_pandas()

    def __getattr__(self, name):  # rows, nonfinite_rows, nonfinite_ids
        return getattr(self.sums, name)

    def sensitivity(self):
        return sensitivity_table(self.sums, self.features, self.outputs, self.std)

    def strongest_examples(self):
        return self.drivers.best_first()


def evaluate_gates(table, proxies, dominance_warning):
    """The proxy and dominance checks on a ranked table, flagged rows marked as the pipeline
    marks them."""
    ranking = Ranking(table=table, features=table["feature"].unique().tolist(),
                      outputs=table["output"].unique().tolist())
    results = [ProxyLimits(tuple(proxies)).finish(ranking),
               Dominance(dominance_warning, {p.feature for p in proxies}).finish(ranking)]
    gates = Gates.of(results)
    failed = {(g.output, g.subject) for g in gates.flags}
    table["flagged"] = [(o, f) in failed
                        for o, f in zip(table["output"], table["feature"], strict=True)]
    return gates


def _data(rows: int = 37, seed: int = 5) -> torch.Tensor:
    """float64 [rows, 4], columns on very different scales and far from zero."""
    generator = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.1, 10.0, 1.0, 1000.0], dtype=torch.float64)
    offset = torch.tensor([5.0, -300.0, 0.0, 1e6], dtype=torch.float64)
    return torch.randn(rows, 4, generator=generator, dtype=torch.float64) * scale + offset


def _standard(rows: int = 37, seed: int = 6) -> torch.Tensor:
    """float64 [rows, 4] centred near zero, where the nonlinear test models are not flat."""
    generator = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    return torch.randn(rows, 4, generator=generator, dtype=torch.float64) * scale


def _split(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    assert sum(sizes) == x.shape[0]
    return list(torch.split(x, sizes))


SPLITS = [[37], [1] * 37, [10, 27], [0, 5, 0, 32], [2, 3, 5, 7, 11, 9], [36, 1]]


# --- FeatureMoments ---------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", SPLITS, ids=str)
def test_moments_equal_numpy_for_any_chunking(sizes):
    x = _data()
    moments = FeatureMoments(4)
    for chunk in _split(x, sizes):
        moments.update(chunk)
    values = x.numpy()
    assert moments.count == 37
    np.testing.assert_allclose(moments.mean.numpy(), values.mean(0), rtol=1e-12, atol=0)
    np.testing.assert_allclose(moments.std.numpy(), values.std(0, ddof=1), rtol=1e-12, atol=0)


def test_moments_of_float32_chunks_accumulate_in_float64():
    x = _data().float()
    moments = FeatureMoments(4)
    for chunk in _split(x, [20, 17]):
        moments.update(chunk)
    assert moments.mean.dtype == torch.float64
    np.testing.assert_allclose(moments.std.numpy(), x.double().numpy().std(0, ddof=1),
                               rtol=1e-12)


def test_moments_std_undefined_below_two_rows():
    moments = FeatureMoments(2)
    assert torch.isnan(moments.std).all()
    moments.update(torch.tensor([[1.0, 2.0]]))
    assert torch.isnan(moments.std).all()
    moments.update(torch.tensor([[3.0, 2.0]]))
    assert moments.std.tolist() == [pytest.approx(2.0**0.5, rel=1e-15), 0.0]


# --- GradientAccumulator: the linear model by hand ---------------------------------------------


def _accumulate(model, x, std, sizes, **kwargs):
    acc = GradientAccumulator(FEATURES, kwargs.pop("outputs", ["score"]), std, **kwargs)
    frames, start = [], 0
    for chunk in _split(x, sizes):
        ids = list(range(start + 1, start + 1 + chunk.shape[0]))
        start += chunk.shape[0]
        scores, jac = sensaudit.scores_and_jacobian(model, chunk) if len(chunk) else (
            torch.zeros(0, len(acc.outputs), dtype=torch.float64),
            torch.zeros(0, len(acc.outputs), 4, dtype=torch.float64))
        frame = acc.update(ids, scores, jac, chunk)
        if len(frame):  # an empty frame would only change the concatenated dtypes
            frames.append(frame)
    return acc, pd.concat(frames, ignore_index=True)


def test_linear_model_sensitivity_by_hand():
    w = torch.tensor([2.0, -0.5, 0.0, 1.5], dtype=torch.float64)
    x = _data()
    std = torch.tensor(x.numpy().std(0, ddof=1))
    acc, _ = _accumulate(Linear(w), x, std, [37])

    table = acc.sensitivity()

    abs_w = w.abs().numpy()
    scaled = std.numpy() * abs_w
    share = scaled / scaled.sum()
    # share order: d (1000 * 1.5), b (10 * 0.5), a (0.1 * 2), c (0)
    expected = pd.DataFrame({
        "output": ["score"] * 4,
        "feature": ["d", "b", "a", "c"],
        "mean_gradient": w.numpy()[[3, 1, 0, 2]],
        "mean_abs_gradient": abs_w[[3, 1, 0, 2]],
        "rms_gradient": abs_w[[3, 1, 0, 2]],
        "std": std.numpy()[[3, 1, 0, 2]],
        "scaled_sensitivity": scaled[[3, 1, 0, 2]],
        "share": share[[3, 1, 0, 2]],
        "rank": [1, 2, 3, 4],
        "flagged": [False] * 4,
    })
    assert list(table.columns) == SENSITIVITY_COLUMNS
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-12, atol=0)
    assert table["share"].sum() == pytest.approx(1.0, abs=1e-15)
    assert acc.rows == 37


def test_std_column_is_the_sample_std_times_gradient():
    # A varying gradient: mean_gradient, mean_abs and rms differ and are checked by hand.
    model = Quadratic()
    x = _standard()
    std = torch.tensor(x.numpy().std(0, ddof=1))
    acc, _ = _accumulate(model, x, std, [37])
    jac = model.expected_jacobian(x)[:, 0].numpy()  # [rows, features]

    table = acc.sensitivity().set_index("feature").loc[FEATURES]

    np.testing.assert_allclose(table["mean_gradient"], jac.mean(0), rtol=1e-12)
    np.testing.assert_allclose(table["mean_abs_gradient"], np.abs(jac).mean(0), rtol=1e-12)
    np.testing.assert_allclose(table["rms_gradient"], np.sqrt((jac**2).mean(0)), rtol=1e-12)
    np.testing.assert_allclose(table["scaled_sensitivity"], np.abs(jac).mean(0) * std.numpy(),
                               rtol=1e-12)
    assert not np.allclose(table["mean_gradient"].abs(), table["mean_abs_gradient"])


def test_tied_features_share_the_best_rank():
    w = torch.tensor([1.0, 1.0, 3.0, 0.0], dtype=torch.float64)
    std = torch.ones(4, dtype=torch.float64)
    acc, _ = _accumulate(Linear(w), _data(), std, [37])
    table = acc.sensitivity()
    assert table["feature"].tolist() == ["c", "a", "b", "d"]
    assert table["rank"].tolist() == [1, 2, 2, 4]
    np.testing.assert_allclose(table["share"], [0.6, 0.2, 0.2, 0.0], rtol=1e-15)


def test_multi_output_tables_rank_within_each_output():
    model = MLP()
    x = _standard()
    std = torch.tensor(x.numpy().std(0, ddof=1))
    acc, _ = _accumulate(model, x, std, [37], outputs=["p", "q", "r"])
    table = acc.sensitivity()
    jac = model.expected_jacobian(x).numpy()
    assert table["output"].tolist() == ["p"] * 4 + ["q"] * 4 + ["r"] * 4
    for i, output in enumerate(["p", "q", "r"]):
        group = table[table["output"] == output]
        scaled = np.abs(jac[:, i]).mean(0) * std.numpy()
        order = np.argsort(-scaled, kind="stable")
        assert group["feature"].tolist() == [FEATURES[k] for k in order]
        np.testing.assert_allclose(group["share"], scaled[order] / scaled.sum(), rtol=1e-12)
        assert group["rank"].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("sizes", SPLITS[1:], ids=str)
def test_chunked_updates_equal_one_update(sizes):
    model = MLP()
    x = _standard()
    std = torch.tensor(x.numpy().std(0, ddof=1))
    kwargs = dict(outputs=["p", "q", "r"], top_k=2, proxies=["b"], keep_examples=5)
    whole, whole_examples = _accumulate(model, x, std, [37], **dict(kwargs))
    chunked, chunked_examples = _accumulate(model, x, std, sizes, **dict(kwargs))

    pd.testing.assert_frame_equal(chunked.sensitivity(), whole.sensitivity(),
                                  check_exact=False, rtol=1e-12, atol=1e-15)
    pd.testing.assert_frame_equal(chunked_examples, whole_examples,
                                  check_exact=False, rtol=1e-12, atol=1e-15)
    assert [(e.id, e.output) for e in chunked.strongest_examples()] == [
        (e.id, e.output) for e in whole.strongest_examples()]


# --- per-example drivers ----------------------------------------------------------------------


def test_examples_list_drivers_by_gradient_times_distance_from_the_baseline():
    # y = w.x: contribution_j = w_j (x_j - b_j), a different order in every row.
    w = torch.tensor([2.0, -0.5, 0.0, 1.5], dtype=torch.float64)
    std = torch.tensor([0.1, 10.0, 1.0, 1.0], dtype=torch.float64)
    baseline = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    x = torch.tensor([[1.5, 2.0, 9.0, 4.0],     # a +1.0, b 0, c 0, d 0
                      [1.0, 12.0, 3.0, 2.0],    # b -5.0, d -3.0, a 0
                      [0.0, 0.0, 0.0, 5.0]], dtype=torch.float64)  # a -2.0, d +1.5, b +1.0
    acc = GradientAccumulator(FEATURES, ["score"], std, top_k=3, baseline=baseline)
    scores, jac = sensaudit.scores_and_jacobian(Linear(w), x)
    frame = acc.update(["r1", "r2", "r3"], scores, jac, x, labels=np.array([1.0, 0.0, np.nan]))

    assert list(frame.columns) == [
        "id", "output", "score", "label",
        "driver_1", "value_1", "gradient_1", "contribution_1",
        "driver_2", "value_2", "gradient_2", "contribution_2",
        "driver_3", "value_3", "gradient_3", "contribution_3"]
    assert frame["id"].tolist() == ["r1", "r2", "r3"]
    assert frame["output"].tolist() == ["score"] * 3
    np.testing.assert_allclose(frame["score"], (x @ w).numpy(), rtol=1e-15)
    np.testing.assert_array_equal(frame["label"], [1.0, 0.0, np.nan])
    assert frame["driver_1"].tolist() == ["a", "b", "a"]
    assert frame.loc[1, ["driver_1", "driver_2"]].tolist() == ["b", "d"]
    assert frame.loc[2, ["driver_1", "driver_2", "driver_3"]].tolist() == ["a", "d", "b"]
    np.testing.assert_allclose(frame.loc[2, ["contribution_1", "contribution_2",
                                             "contribution_3"]].astype(float),
                               [-2.0, 1.5, 1.0], rtol=1e-15)
    np.testing.assert_allclose(frame.loc[2, ["value_1", "value_2", "value_3"]].astype(float),
                               [0.0, 5.0, 0.0], rtol=1e-15)
    np.testing.assert_allclose(frame.loc[2, ["gradient_1", "gradient_2", "gradient_3"]]
                               .astype(float), [2.0, 1.5, -0.5], rtol=1e-15)
    np.testing.assert_allclose(frame.loc[:1, ["contribution_1", "contribution_2"]]
                               .astype(float), [[1.0, 0.0], [-5.0, -3.0]], rtol=1e-15)


def test_strongest_examples_are_those_the_proxy_moves_most():
    model = Quadratic()
    x = _standard()
    std = torch.tensor(x.numpy().std(0, ddof=1))
    acc, _ = _accumulate(model, x, std, [10, 27], top_k=2, proxies=["c"], keep_examples=4)
    # The baseline is zero here: the proxy's contribution is its gradient x its value.
    contribution = np.abs(model.expected_jacobian(x)[:, 0, 2].numpy() * x[:, 2].numpy())
    expected_ids = (np.argsort(-contribution, kind="stable")[:4] + 1).tolist()

    examples = acc.strongest_examples()

    assert [e.id for e in examples] == expected_ids
    np.testing.assert_allclose([e.rank_value for e in examples],
                               np.sort(contribution)[::-1][:4], rtol=1e-12)
    assert all(len(e.drivers) == 2 and e.label is None and e.reason == "proxies"
               for e in examples)


def test_nonfinite_rows_are_counted_and_left_out():
    std = torch.ones(4, dtype=torch.float64)
    acc = GradientAccumulator(FEATURES, ["score"], std)
    jac = torch.ones(4, 1, 4, dtype=torch.float64)
    jac[1, 0, 2] = float("nan")
    jac[3, 0, 0] = float("inf")
    scores = torch.zeros(4, 1, dtype=torch.float64)
    scores[2, 0] = float("nan")
    acc.update(["w", "x", "y", "z"], scores, jac, torch.ones(4, 4, dtype=torch.float64))
    assert acc.rows == 1
    assert acc.nonfinite_rows == 3
    assert acc.nonfinite_ids == ["x", "y", "z"]
    assert acc.sensitivity()["mean_gradient"].tolist() == [1.0] * 4


# --- gates ------------------------------------------------------------------------------------


def _table(shares: dict[str, float]) -> pd.DataFrame:
    features = list(shares)
    share = np.array(list(shares.values()))
    return pd.DataFrame({
        "output": "score", "feature": features, "mean_gradient": share,
        "mean_abs_gradient": share, "rms_gradient": share, "std": 1.0,
        "scaled_sensitivity": share, "share": share,
        "rank": pd.Series(share).rank(ascending=False, method="min").astype(int),
        "flagged": False,
    })[SENSITIVITY_COLUMNS]


SHARES = {"p": 0.6, "q": 0.3, "r": 0.1}


def test_proxy_over_max_share_is_flagged():
    table = _table(SHARES)
    gates = evaluate_gates(table, [ProxyLimit("p", max_share=0.5, reason="legal")], 0.7)
    assert gates.flags == [Gate(check="proxy_limits", subject="p", output="score", passed=False,
                                limit="share <= 50%", details={"share": 0.6, "rank": 1,
                                                               "max_share": 0.5,
                                                               "max_rank": None})]
    assert gates.flags[0].limit == "share <= 50%"
    assert table["flagged"].tolist() == [True, False, False]
    assert gates.warnings == []
    assert not gates.passed


def test_proxy_at_or_under_max_share_passes():
    table = _table(SHARES)
    gates = evaluate_gates(table, [ProxyLimit("q", max_share=0.3), ProxyLimit("r",
                                                                             max_share=0.5)], 0.7)
    assert gates.flags == []
    assert gates.passed
    assert table["flagged"].tolist() == [False, False, False]


def test_proxy_at_or_above_max_rank_is_flagged():
    table = _table(SHARES)
    gates = evaluate_gates(table, [ProxyLimit("q", max_rank=2)], 0.7)
    assert [(f.subject, f.details['rank'], f.limit) for f in gates.flags] == [
        ("q", 2, "not among the top 2")]
    assert table["flagged"].tolist() == [False, True, False]


def test_proxy_below_max_rank_passes():
    table = _table(SHARES)
    gates = evaluate_gates(table, [ProxyLimit("q", max_rank=1), ProxyLimit("r", max_rank=2)],
                           0.7)
    assert gates.passed
    assert not table["flagged"].any()


def test_proxy_over_both_limits_names_both():
    gates = evaluate_gates(_table(SHARES), [ProxyLimit("p", max_share=0.5, max_rank=1)], 0.7)
    assert gates.flags[0].limit == "share <= 50% and not among the top 1"


def test_dominant_undeclared_feature_warns():
    table = _table(SHARES)
    gates = evaluate_gates(table, [], 0.5)
    assert gates.warnings == [Notice(check="dominance", subject="p", output="score",
                                     details={"share": 0.6, "threshold": 0.5})]
    assert gates.passed  # a warning is not a failed gate
    assert not table["flagged"].any()


def test_no_dominance_warning_at_threshold_or_for_declared_features():
    assert evaluate_gates(_table(SHARES), [], 0.6).warnings == []
    gates = evaluate_gates(_table(SHARES), [ProxyLimit("p", max_share=0.9)], 0.5)
    assert gates.warnings == []
    assert gates.flags == []


# --- planted proxies --------------------------------------------------------------------------


def _ad_frame(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """Quality is driven by copy_length alone; the other columns are pure noise."""
    rng = np.random.default_rng(seed)
    copy_length = rng.normal(300.0, 60.0, rows)
    quality = (copy_length + rng.normal(0.0, 20.0, rows) > 300.0).astype(float)
    return pd.DataFrame({
        "ad_id": [f"ad{i:04d}" for i in range(rows)],
        "noise_a": rng.normal(0.0, 1.0, rows),
        "copy_length": copy_length,
        "noise_b": rng.normal(50.0, 10.0, rows),
        "noise_c": rng.uniform(0.0, 1.0, rows),
        "quality": quality,
    })


NOISE = ["noise_a", "noise_b", "noise_c"]


class _LengthOnlyMLP(torch.nn.Module):
    """A nonlinear scorer whose first layer has zero weight on every column but copy_length."""

    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(4, 6).double()
        self.out = torch.nn.Linear(6, 1).double()
        with torch.no_grad():
            self.hidden.weight[:, [0, 2, 3]] = 0.0
            self.hidden.weight[:, 1] /= 100.0

    def forward(self, x):
        return torch.sigmoid(self.out(torch.tanh(self.hidden(x - torch.tensor(
            [0.0, 300.0, 50.0, 0.5], dtype=x.dtype))))).squeeze(1)


def test_planted_proxy_in_mlp_is_flagged_and_noise_is_not():
    frame = _ad_frame()
    result = sensaudit.audit_frame(_LengthOnlyMLP(), frame, label="quality", id="ad_id",
                                   proxies=[ProxyLimit(feature="copy_length", max_share=0.15)])
    table = result.table.set_index("feature")
    assert result.features == ["noise_a", "copy_length", "noise_b", "noise_c"]
    assert not result.passed
    assert [(f.subject, f.output) for f in result.gates.flags] == [("copy_length", "score")]
    assert table.loc["copy_length", "share"] == 1.0
    assert table.loc["copy_length", "rank"] == 1
    assert table.loc["copy_length", "flagged"]
    assert (table.loc[NOISE, "share"] == 0.0).all()
    assert not table.loc[NOISE, "flagged"].any()
    assert result.gates.warnings == []
    assert result.rows == 300
    assert "**copy_length** is a declared proxy" in result.findings[0]


def _train_logistic(frame: pd.DataFrame, features: list[str]) -> torch.nn.Module:
    """Logistic regression on standardised inputs, fitted with full-batch L-BFGS (seeded)."""
    x = torch.tensor(frame[features].to_numpy(), dtype=torch.float64)
    y = torch.tensor(frame["quality"].to_numpy(), dtype=torch.float64)
    mean, std = x.mean(0), x.std(0)
    linear = torch.nn.Linear(len(features), 1).double()
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(
            linear((x - mean) / std).squeeze(1), y) + 1e-3 * linear.weight.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)

    class Scorer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = linear
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def forward(self, inp):
            return torch.sigmoid(self.linear((inp - self.mean) / self.std)).squeeze(1)

    return Scorer()


def test_planted_proxy_learned_by_training_is_flagged():
    frame = _ad_frame()
    features = ["noise_a", "copy_length", "noise_b", "noise_c"]
    model = _train_logistic(frame, features)
    model.train()  # audit_frame must audit in eval mode and hand the model back as it was
    result = sensaudit.audit_frame(model, frame, features=features, label="quality",
                                   proxies=[ProxyLimit(feature="copy_length", max_share=0.15)])
    table = result.table.set_index("feature")
    assert model.training
    assert [f.subject for f in result.gates.flags] == ["copy_length"]
    assert table.loc["copy_length", "share"] > 0.9
    assert (table.loc[NOISE, "share"] < 0.05).all()
    assert not table.loc[NOISE, "flagged"].any()
    assert not result.passed


def test_same_scorer_passes_when_the_proxy_is_not_declared_but_warns():
    result = sensaudit.audit_frame(_LengthOnlyMLP(), _ad_frame(), label="quality", id="ad_id")
    assert result.passed
    assert result.gates.flags == []
    shares = [(w.subject, w.details['share']) for w in result.gates.warnings]
    assert shares == [("copy_length", 1.0)]


def test_scorer_reading_only_noise_passes_the_proxy_gate():
    class NoiseOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([1.0, 0.0, 0.1, 2.0], dtype=torch.float64))

        def forward(self, x):
            return x @ self.w

    result = sensaudit.audit_frame(NoiseOnly(), _ad_frame(), label="quality", id="ad_id",
                                   proxies=[ProxyLimit(feature="copy_length", max_share=0.15)],
                                   settings=AuditSettings(dominance_warning=1.0))
    table = result.table.set_index("feature")
    assert result.passed
    assert table.loc["copy_length", "share"] == 0.0
    assert not table["flagged"].any()


def test_planted_proxy_found_through_the_engine_and_accumulator():
    frame = _ad_frame()
    features = ["noise_a", "copy_length", "noise_b", "noise_c"]
    x = torch.tensor(frame[features].to_numpy(), dtype=torch.float64)
    moments = FeatureMoments(4)
    moments.update(x)
    acc = GradientAccumulator(features, ["score"], moments.std, proxies=["copy_length"])
    model = _LengthOnlyMLP().eval()
    for chunk, ids in ((x[:128], range(128)), (x[128:], range(128, 300))):
        scores, jac = sensaudit.scores_and_jacobian(model, chunk, batch_size=50)
        acc.update(list(ids), scores, jac, chunk)
    table = acc.sensitivity()
    gates = evaluate_gates(table, [ProxyLimit("copy_length", max_share=0.15)], 0.5)
    assert [f.subject for f in gates.flags] == ["copy_length"]
    assert table.loc[table["flagged"], "feature"].tolist() == ["copy_length"]


def test_zero_share_proxy_is_never_flagged_by_rank():
    # Regression: ties took the best rank, so a proxy the score ignores (share 0) tied with
    # other ignored features and ranked "among the top 3" of a 4-feature model.
    table = _table({"p": 0.7, "q": 0.3, "r": 0.0, "s": 0.0})
    assert table["rank"].tolist() == [1, 2, 3, 3]  # what the old tie rule gave
    ranked = table.assign(rank=rank_shares(table["share"]))
    assert ranked["rank"].tolist() == [1, 2, 4, 4]  # zero shares tie for last
    gates = evaluate_gates(table, [ProxyLimit("r", max_rank=3)], 1.0)
    assert gates.flags == [] and gates.passed
    assert len(gates.all) == 1  # the gate was evaluated, and passed


def test_all_zero_shares_do_not_rank_every_feature_first():
    assert rank_shares(pd.Series([0.0, 0.0, 0.0])).tolist() == [3, 3, 3]
    assert rank_shares(pd.Series([0.5, float("nan"), 0.0, 0.5])).tolist() == [1, 4, 3, 1]


def test_finite_rows_fast_path_is_exact():
    # The per-row sum clears finite rows in one reduction; rows whose sum is not finite are
    # checked element by element, including finite values whose sum overflows.
    values = torch.randn(10, 2, 3)
    scores = torch.randn(10, 2)
    values[1, 0, 0] = float("nan")
    values[3, 1, 2] = float("inf")
    scores[5, 1] = float("-inf")
    values[7] = 3e38  # finite float32 values whose row sum overflows to inf
    expected = torch.isfinite(values).flatten(1).all(1) & torch.isfinite(scores).all(1)
    assert finite_rows(scores, values).tolist() == expected.tolist()
    assert expected.tolist() == [True, False, True, False, True, False, True, True, True, True]


def test_nothing_per_row_asked_for_means_nothing_spilled_and_the_same_figures(monkeypatch):
    # With no examples.csv and no check that replays, the audit keeps no per-row results (the
    # report's examples are chosen during the read: example_candidates); its figures are the
    # same with or without examples in the report.
    import sensaudit.pipeline.spill as spill_module

    appended = []
    real_append = spill_module.Spill.append
    monkeypatch.setattr(spill_module.Spill, "append",
                        lambda self, *a, **k: appended.append(1) or real_append(self, *a, **k))
    frame = _ad_frame()
    model = _LengthOnlyMLP().eval()
    full = sensaudit.audit_frame(model, frame, label="quality", id="ad_id")
    assert appended == [] and full.examples
    lean = sensaudit.audit_frame(model, frame, label="quality", id="ad_id",
                                 settings=AuditSettings(examples_in_report=0))
    assert appended == [] and lean.examples == []
    pd.testing.assert_frame_equal(lean.table, full.table)
