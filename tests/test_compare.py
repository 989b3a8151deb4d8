"""`sensaudit compare`: every figure checked against closed forms on linear scorers.

For a linear scorer y = w.x the gradient of every row is w, so mean_abs_gradient_j = |w_j|,
scaled_sensitivity_j = std_j |w_j| and share_j = std_j |w_j| / sum_k std_k |w_k|. Each row's
contribution vector is w * std for every row, so the per-row cosine between two linear models
is cos(w_old * std, w_new * std), and the score change of a row is (w_new - w_old).x.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from sensaudit import compare_models, load_config
from sensaudit.cli.app import app
from sensaudit.pipeline.compare import kendall_tau, spearman, top_k_overlap
from sensaudit.results.comparison import ScoreChange
from sensaudit.stats.accumulators import PoissonBootstrap
from sensaudit.stats.bucket_bootstrap import bucket_count, buckets_of

FEATURES = ["length", "clarity", "structure", "noise"]


class LinearScorer(torch.nn.Module):
    """y = w.x (float64): gradient w at every row."""

    def __init__(self, w: list[float]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def save_linear(path: Path, w: list[float]) -> Path:
    torch.jit.save(torch.jit.script(LinearScorer(w).eval()), str(path))
    return path


@pytest.fixture
def setup(tmp_path: Path):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(60, 4)) * [50.0, 0.2, 0.3, 1.0], columns=FEATURES)
    frame.insert(0, "ad_id", [f"ad{i}" for i in range(60)])
    frame.to_csv(tmp_path / "data.csv", index=False)
    old = save_linear(tmp_path / "old.pt", [0.02, 1.0, 0.5, 0.1])
    new = save_linear(tmp_path / "new.pt", [0.001, 3.0, 2.0, 0.1])
    cfg = {"data": {"path": "data.csv", "id": "ad_id"},
           "audit": {"proxies": [{"feature": "length", "max_share": 0.2}]},
           "compare": {"bootstrap_samples": 100, "seed": 3},
           "report": {"dir": "out"}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path, frame, old, new


def closed_form_shares(frame: pd.DataFrame, w: list[float]) -> np.ndarray:
    scaled = frame[FEATURES].std(ddof=1).to_numpy() * np.abs(w)
    return scaled / scaled.sum()


def test_compare_figures_match_closed_form(setup):
    tmp, frame, old, new = setup
    result = compare_models(load_config(tmp / "cfg.yaml", require_model=False), old, new)
    table = result.table.set_index("feature").loc[FEATURES]
    w_old, w_new = [0.02, 1.0, 0.5, 0.1], [0.001, 3.0, 2.0, 0.1]
    share_old, share_new = closed_form_shares(frame, w_old), closed_form_shares(frame, w_new)
    std = frame[FEATURES].std(ddof=1).to_numpy()
    np.testing.assert_allclose(table["share_old"], share_old, rtol=1e-10)
    np.testing.assert_allclose(table["share_new"], share_new, rtol=1e-10)
    np.testing.assert_allclose(table["delta_share"], share_new - share_old, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(table["scaled_sensitivity_old"], std * np.abs(w_old), rtol=1e-10)
    np.testing.assert_allclose(table["sensitivity_ratio"], np.abs(w_new) / np.abs(w_old),
                               rtol=1e-10)
    np.testing.assert_allclose(table["scaled_sensitivity_new"], std * np.abs(w_new), rtol=1e-10)
    for column, shares in (("rank_old", share_old), ("rank_new", share_new)):
        expected = pd.Series(shares).rank(ascending=False, method="min").astype(int)
        assert table[column].tolist() == expected.tolist()
    # length: share_old = 50*0.02 / (1 + 0.2 + 0.15 + 0.1) ~ 0.69 > 0.2: flagged before, not after.
    assert bool(table.loc["length", "flagged_old"]) and not bool(table.loc["length", "flagged_new"])
    assert table["gate_changed"].tolist() == [True, False, False, False]
    assert result.passed

    overall = result.overall["score"]
    assert overall.spearman == pytest.approx(spearman(share_old, share_new))
    assert overall.kendall_tau == pytest.approx(kendall_tau(share_old, share_new))
    assert overall.top_k_overlap == top_k_overlap(share_old, share_new, 3)
    a, b = np.array(w_old) * std, np.array(w_new) * std
    cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert overall.cosine.mean == pytest.approx(cosine, rel=1e-12)
    assert overall.cosine.median == pytest.approx(cosine, abs=1e-3)  # histogram bin
    delta = frame[FEATURES].to_numpy() @ (np.array(w_new) - np.array(w_old))
    assert overall.score_change.mean == pytest.approx(delta.mean(), rel=1e-10)
    assert overall.score_change.mean_abs == pytest.approx(np.abs(delta).mean(), rel=1e-10)
    assert overall.score_change.max_abs == pytest.approx(np.abs(delta).max(), rel=1e-10)
    moved = overall.most_moved_rows[0]
    assert moved.id == frame["ad_id"][int(np.abs(delta).argmax())]


def test_bootstrap_intervals_match_a_direct_computation(setup):
    """Linear scorers: each replicate's share is std_b |w| / sum, with std_b the weighted
    sample std under that replicate's weights; the intervals are its quantiles. A row's weight
    is its bucket's: Poisson(1) per (seed, replicate, bucket), the bucket a hash of (seed,
    row)."""
    tmp, frame, old, new = setup
    result = compare_models(load_config(tmp / "cfg.yaml", require_model=False), old, new)
    table = result.table.set_index("feature").loc[FEATURES]
    buckets = bucket_count(len(FEATURES))
    bucket_weights = PoissonBootstrap(samples=100, seed=3).weights(np.arange(1, buckets + 1))
    weights = bucket_weights[:, buckets_of(np.arange(1, 61), 3, buckets)].numpy()
    x = frame[FEATURES].to_numpy()
    total = weights.sum(1, keepdims=True)
    mean = weights @ x / total
    var = (weights @ x**2 - total * mean**2) / (total - 1)
    std_b = np.sqrt(var)

    def shares(w):
        scaled = std_b * np.abs(w)
        return scaled / scaled.sum(1, keepdims=True)

    old_b, new_b = shares([0.02, 1.0, 0.5, 0.1]), shares([0.001, 3.0, 2.0, 0.1])
    for column, replicates, q in (("share_old_low", old_b, 0.025),
                                  ("share_old_high", old_b, 0.975),
                                  ("share_new_low", new_b, 0.025),
                                  ("share_new_high", new_b, 0.975),
                                  ("delta_share_low", new_b - old_b, 0.025),
                                  ("delta_share_high", new_b - old_b, 0.975)):
        np.testing.assert_allclose(table[column], np.quantile(replicates, q, axis=0),
                                   rtol=1e-8, err_msg=column)
    significant = (table["delta_share_low"] > 0) | (table["delta_share_high"] < 0)
    assert table["significant"].tolist() == significant.tolist()


def test_comparison_json_holds_the_csv_figures(setup):
    tmp, _, old, new = setup
    out = tmp / "cmp_json"
    from sensaudit import run_compare

    result, _ = run_compare(load_config(tmp / "cfg.yaml", require_model=False), old, new,
                            out_dir=out)
    summary = json.loads((out / "comparison.json").read_text())
    csv = pd.read_csv(out / "comparison.csv")
    assert [f["feature"] for f in summary["features"]] == csv["feature"].tolist()
    for record, (_, row) in zip(summary["features"], csv.iterrows(), strict=True):
        for key in ("share_old", "share_new", "delta_share", "rank_old", "rank_new"):
            assert record[key] == pytest.approx(row[key], rel=1e-7)
    agreement = result.overall["score"]
    for key in ("spearman", "kendall_tau", "top_k_overlap"):
        assert summary[key] == pytest.approx(getattr(agreement, key))
        assert summary["outputs"]["score"][key] == pytest.approx(getattr(agreement, key))
    assert summary["score_change"]["max_abs"] == pytest.approx(
        result.overall["score"].score_change.max_abs)


def test_identical_models_give_zero_delta_and_full_agreement(setup):
    tmp, frame, old, _ = setup
    result = compare_models(load_config(tmp / "cfg.yaml", require_model=False), old, old)
    assert (result.table["delta_share"] == 0).all()
    assert (result.table["delta_share_low"] == 0).all()
    assert (result.table["delta_share_high"] == 0).all()
    assert not result.table["significant"].any()
    overall = result.overall["score"]
    assert overall.spearman == pytest.approx(1.0)
    assert overall.kendall_tau == pytest.approx(1.0)
    assert overall.top_k_overlap == 1.0
    assert overall.cosine.mean == pytest.approx(1.0)
    assert overall.score_change == ScoreChange(mean=0.0, mean_abs=0.0, max_abs=0.0)


def test_rank_statistics_on_known_orderings():
    a = np.array([0.4, 0.3, 0.2, 0.1])
    assert spearman(a, a[::-1]) == pytest.approx(-1.0)
    assert kendall_tau(a, a[::-1]) == pytest.approx(-1.0)
    # One adjacent swap among 4: 5 concordant, 1 discordant pair -> tau = 4/6;
    # rank differences (0,0,1,1) -> spearman = 1 - 6*2/(4*15) = 0.8.
    b = np.array([0.4, 0.3, 0.1, 0.2])
    assert kendall_tau(a, b) == pytest.approx(4 / 6)
    assert spearman(a, b) == pytest.approx(0.8)
    assert top_k_overlap(a, b, 2) == 1.0 and top_k_overlap(a, b, 3) == pytest.approx(2 / 3)


def test_bootstrap_weights_are_poisson_and_depend_only_on_row_numbers():
    boot = PoissonBootstrap(samples=400, seed=1)
    rows = np.arange(1, 2001)
    w = boot.weights(rows).numpy()
    assert w.mean() == pytest.approx(1.0, abs=0.01) and w.var() == pytest.approx(1.0, abs=0.02)
    assert (w == 0).mean() == pytest.approx(math.exp(-1), abs=0.01)
    np.testing.assert_array_equal(boot.weights(rows[500:700]).numpy(), w[:, 500:700])
    assert not np.array_equal(PoissonBootstrap(400, 2).weights(rows).numpy(), w)


def test_row_buckets_depend_only_on_seed_and_row_number():
    rows = np.arange(1, 200_001)
    buckets = buckets_of(rows, 5, 4096).numpy()
    np.testing.assert_array_equal(buckets_of(rows[123:4567], 5, 4096).numpy(),
                                  buckets[123:4567])
    counts = np.bincount(buckets, minlength=4096)
    # About 48.8 rows a bucket, Poisson-spread: no bucket empty or twice the mean.
    assert counts.min() > 15 and counts.max() < 100 and counts.sum() == len(rows)
    assert (buckets_of(rows, 6, 4096).numpy() != buckets).mean() > 0.99


@pytest.mark.parametrize("columns", [1, 64, 8192, 8193, 40_000, 2**25])
def test_bucket_sums_stay_within_the_replicates_bound(columns):
    """A model's bucket sums [buckets, features x outputs] stay within 2**25 values; where
    that bound shrinks the bucket count below 4,096, it is the largest replicate count compare
    accepts for that width (check_bootstrap_size), so there are never fewer buckets than
    replicates there."""
    buckets = bucket_count(columns)
    assert 1 <= buckets <= 4096 and buckets * columns <= 2**25
    assert buckets == min(4096, 2**25 // columns)


def test_report_is_reproducible_and_independent_of_chunk_size(setup):
    tmp, _, old, new = setup
    cfg = load_config(tmp / "cfg.yaml", require_model=False)
    first = compare_models(cfg, old, new).table
    again = compare_models(cfg, old, new).table
    pd.testing.assert_frame_equal(first, again)
    from dataclasses import replace

    chunked = replace(cfg, data=replace(cfg.data, chunk_rows=7))
    pd.testing.assert_frame_equal(first, compare_models(chunked, old, new).table,
                                  check_exact=False, rtol=1e-9)


def test_cli_writes_reports_and_gates_on_new_model(setup):
    tmp, frame, old, new = setup
    runner = CliRunner()
    out = tmp / "cmp"
    result = runner.invoke(app, ["compare", str(old), str(new), "--config",
                                 str(tmp / "cfg.yaml"), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    csv = pd.read_csv(out / "comparison.csv")
    assert list(csv.columns[:7]) == ["output", "feature", "share_old", "share_new",
                                     "delta_share", "share_old_low", "share_old_high"]
    assert {"rank_old", "rank_new", "gate_changed", "significant"} <= set(csv.columns)
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["passed"] is True
    assert {"spearman", "kendall_tau", "top_k_overlap", "cosine", "score_change"} <= set(summary)
    assert len(summary["features"]) == len(FEATURES)
    markdown = (out / "comparison.md").read_text()
    before = closed_form_shares(frame, [0.02, 1.0, 0.5, 0.1])[0]
    after = closed_form_shares(frame, [0.001, 3.0, 2.0, 0.1])[0]
    assert f"length's share fell from {before:.0%} to {after:.0%}" in markdown
    assert "length was flagged by the old model and passes its gate in the new one." in markdown
    # Swapped: the new model is the proxy-heavy one, so the gate fails.
    result = runner.invoke(app, ["compare", str(new), str(old), "--config",
                                 str(tmp / "cfg.yaml"), "--out", str(out), "-q"])
    assert result.exit_code == 1, result.output
    assert json.loads((out / "comparison.json").read_text())["passed"] is False


def test_proxy_share_increase_margin_fails(setup):
    tmp, _, old, _ = setup
    grown = save_linear(tmp / "grown.pt", [0.021, 1.0, 0.5, 0.1])  # length share up ~1 point
    cfg = yaml.safe_load((tmp / "cfg.yaml").read_text())
    cfg["audit"]["proxies"][0]["max_share"] = 0.9
    cfg["compare"]["max_proxy_share_increase"] = 0.005
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    result = compare_models(load_config(tmp / "cfg.yaml", require_model=False), old, grown)
    assert not result.passed
    assert [inc.feature for inc in result.proxy_increases] == ["length"]
    assert any("grew by" in line for line in result.findings)


def test_compare_bad_input_exits_2(setup):
    tmp, _, old, _ = setup
    result = CliRunner().invoke(app, ["compare", str(old), str(tmp / "missing.pt"), "--config",
                                      str(tmp / "cfg.yaml"), "-q"])
    assert result.exit_code == 2
    assert f"Error: {tmp / 'missing.pt'}: model file not found (model.path)" in result.output


def test_sample_models_show_the_story():
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "sensaudit/sample/configs" / "scorer_v2.yaml")
    result = compare_models(cfg, root / "sensaudit/sample/sample_data/scorer_v1.pt2",
                            root / "sensaudit/sample/sample_data/scorer_v2.pt2")
    table = result.table.set_index("feature")
    assert table.loc["copy_length", "delta_share"] < -0.2
    assert table.loc["copy_length", "significant"]
    for feature in ("sentence_structure", "clarity"):
        assert table.loc[feature, "delta_share"] > 0 and table.loc[feature, "significant"]
    assert table["rank_new"].idxmin() in ("sentence_structure", "clarity")
    assert result.passed


def test_bootstrap_blocks_of_rows_give_the_same_intervals(setup, monkeypatch):
    # Rows are scattered into their buckets a block at a time, and the buckets weighted a
    # block at a time (bounded memory); the blocks must not change any figure.
    import sensaudit.stats.bucket_bootstrap as bucket_module

    tmp, _, old, new = setup
    config = load_config(tmp / "cfg.yaml")
    whole = compare_models(config, old, new)
    monkeypatch.setattr(bucket_module, "BLOCK_ELEMENTS", 4 * 7)  # 7 rows per block
    monkeypatch.setattr(bucket_module, "WEIGHT_ELEMENTS", 100 * 5)  # 5 buckets per block
    blocked = compare_models(config, old, new)
    assert "delta_share_low" in whole.table.columns
    pd.testing.assert_frame_equal(blocked.table, whole.table, check_exact=False, rtol=1e-12,
                                  atol=1e-15)
