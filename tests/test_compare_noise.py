"""Honest `compare`: intervals that cover what they claim, retraining noise from seed replicas,
share points, a practical threshold, and the output named in every finding."""

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

from sensaudit import audit_frame, compare_models, load_config
from sensaudit.cli.app import app
from sensaudit.pipeline.compare import bootstrap_interval
from sensaudit.pipeline.compare_noise import t_quantile
from sensaudit.settings.sections import CompareSettings
from sensaudit.stats.bucket_bootstrap import BucketBootstrap, normalised

FEATURES = ["a", "b", "c", "d"]


def test_t_quantiles_match_the_tables():
    # Student t 97.5% points (any statistics table).
    for dof, expected in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (5, 2.5706),
                          (10, 2.2281), (30, 2.0423)):
        assert t_quantile(0.975, dof) == pytest.approx(expected, abs=1e-4)
    assert t_quantile(0.95, 7) == pytest.approx(1.8946, abs=1e-4)


# Two linear scorers on four independent features with known spread: three normal with mean 0,
# one exponential (skewed). A share is, in the population, sigma_j |w_j| / sum_k sigma_k |w_k|
# for a gradient (per unit, scaled by the feature's std) and E|w_j x_j| / sum_k E|w_k x_k| for
# gradient x input (score units); E|x| = sigma sqrt(2 / pi) for N(0, sigma^2), sigma for an
# exponential of mean sigma.
SIGMA = np.array([1.0, 2.0, 0.5, 3.0])
MEAN_ABS = SIGMA * np.array([math.sqrt(2 / math.pi)] * 3 + [1.0])
W_OLD, W_NEW = np.array([1.0, 0.5, 2.0, 0.2]), np.array([0.6, 0.8, 2.0, 0.3])


def _population_share(scale: np.ndarray, w: np.ndarray) -> np.ndarray:
    scaled = scale * np.abs(w)
    return scaled / scaled.sum()


def _draw(rng: np.random.Generator, rows: int, sets: int) -> np.ndarray:
    """x [rows, sets, 4]: ``sets`` independent data sets of ``rows`` rows."""
    x = rng.normal(size=(rows, sets, 4)) * SIGMA
    x[..., 3] = rng.exponential(SIGMA[3], size=(rows, sets))
    return x


@pytest.mark.slow
@pytest.mark.parametrize("rows, buckets", [(300, None), (4000, 100)])
def test_the_default_95_interval_covers_95_percent_of_simulated_changes(rows, buckets):
    """Over 2,000 data sets from the distribution above, the paired bootstrap's 95% interval of
    the change in share (the project's bucket sums, Poisson weights, resampled moments and
    percentile interval, at the default replicate count) contains the population change in
    93-97% of the data sets, for a per-unit and a score-unit method. Two regimes: a small file
    (300 rows, the default bucket count: nearly every row its own bucket, the row bootstrap)
    and rows 40 to a bucket (4,000 rows in 100 buckets, fewer buckets than compare ever uses at
    its default replicate count): the bucket bootstrap's approximation at its coarsest.

    The data sets are columns of one accumulator (as features of a per-unit model, as outputs
    of a score-unit one, since shares are normalised per output); each block of 500 uses its own
    bootstrap seed."""
    samples = CompareSettings().bootstrap_samples
    assert samples >= 1000
    sets, blocks = 500, 4
    rng = np.random.default_rng(0)
    row_numbers = np.arange(1, rows + 1)
    covered: dict[str, list[np.ndarray]] = {"per unit": [], "score units": []}
    for seed in range(blocks):
        x = _draw(rng, rows, sets)
        # Per unit: the gradient is w on every row; one output, the data sets side by side.
        per_unit = BucketBootstrap(samples, seed, sets * 4, buckets=buckets)
        wide = torch.from_numpy(x.reshape(rows, -1))
        gradients = [torch.from_numpy(np.tile(w, (rows, 1, sets))) for w in (W_OLD, W_NEW)]
        everything = torch.ones(rows, dtype=torch.bool)
        per_unit.update(row_numbers, wide, gradients, [everything, everything])
        resampled = per_unit.resampled()
        shares = [normalised((resampled.mean_abs[m] * resampled.std[:, None, :])
                             .reshape(samples, sets, 4)) for m in (0, 1)]
        truth = _population_share(SIGMA, W_NEW) - _population_share(SIGMA, W_OLD)
        low, high = bootstrap_interval((shares[1] - shares[0]).numpy(), 0.95)
        covered["per unit"].append((low <= truth) & (truth <= high))
        # Score units: gradient x input; one output per data set, each normalised on its own.
        score_units = BucketBootstrap(samples, seed, 4, buckets=buckets)
        contributions = [torch.from_numpy(x * w) for w in (W_OLD, W_NEW)]
        score_units.update(row_numbers, torch.from_numpy(x[:, 0, :]), contributions,
                           [everything, everything])
        resampled = score_units.resampled()
        shares = [resampled.shares(m, per_unit=False) for m in (0, 1)]
        truth = _population_share(MEAN_ABS, W_NEW) - _population_share(MEAN_ABS, W_OLD)
        low, high = bootstrap_interval((shares[1] - shares[0]).numpy(), 0.95)
        covered["score units"].append((low <= truth) & (truth <= high))
    for method, hits in covered.items():
        per_feature = np.concatenate(hits).mean(0)  # [4]: 2,000 data sets each
        overall = float(per_feature.mean())
        print(f"{rows} rows, buckets {buckets or 'default'}, {method}: covered "
              f"{int(np.concatenate(hits).sum())} of {blocks * sets * 4} "
              f"({overall:.1%}; per feature {np.round(per_feature * 100, 1).tolist()})")
        assert 0.93 <= overall <= 0.97, (method, overall)
        assert ((0.92 <= per_feature) & (per_feature <= 0.98)).all(), (method, per_feature)


# --- retraining noise from seed replicas -----------------------------------------------------


class Scorer(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net((x - self.mean) / self.std))[:, 0]


def train(frame: pd.DataFrame, seed: int) -> Scorer:
    """A 4-12-1 tanh MLP, 150 full-batch Adam steps from the seed's initialisation."""
    torch.manual_seed(seed)
    x = torch.tensor(frame[FEATURES].to_numpy())
    y = torch.tensor(frame["y"].to_numpy())[:, None]
    net = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.Tanh(),
                              torch.nn.Linear(12, 1)).double()
    scorer = Scorer(net, x.mean(0), x.std(0))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny full-batch steps: threads only fight over the cores
    try:
        for _ in range(150):
            optimizer.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(
                net((x - scorer.mean) / scorer.std), y).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return scorer.eval()


def labelled(rng: np.random.Generator, rows: int, weights: list[float]) -> pd.DataFrame:
    frame = pd.DataFrame(rng.normal(size=(rows, 4)), columns=FEATURES)
    logit = frame[FEATURES].to_numpy() @ np.array(weights)
    frame["y"] = rng.binomial(1, 1 / (1 + np.exp(-logit))).astype(float)
    return frame


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Six trainings of one model on one data set (seeds 0-5), one of a model whose data
    changed (b's effect tripled), the audit rows and a config."""
    tmp = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(0)
    train_rows = labelled(rng, 1500, [1.0, 0.5, -0.8, 0.0])
    changed = labelled(rng, 1500, [1.0, 1.5, -0.8, 0.0])
    labelled(rng, 800, [1.0, 0.5, -0.8, 0.0]).to_csv(tmp / "audit.csv", index=False)
    paths = []
    for seed in range(6):
        paths.append(tmp / f"seed{seed}.pt")
        torch.jit.save(torch.jit.script(train(train_rows, seed)), str(paths[-1]))
    torch.jit.save(torch.jit.script(train(changed, 0)), str(tmp / "changed.pt"))
    (tmp / "cfg.yaml").write_text(yaml.safe_dump({
        "data": {"path": "audit.csv", "label": "y"}, "report": {"dir": "out"}}))
    return tmp, paths


def test_models_differing_only_in_seed_compared_with_seed_replicas_mark_no_change(seeds):
    tmp, paths = seeds
    cfg = load_config(tmp / "cfg.yaml")
    rows_only = compare_models(cfg, paths[0], paths[1]).table
    result = compare_models(cfg, paths[0], paths[1], old_replicas=paths[2:4],
                            new_replicas=paths[4:6])
    table = result.table
    # Row-sampling noise alone calls every seed-to-seed difference a change; with the
    # retraining noise of the replicas none is marked.
    assert rows_only["changed"].all()
    assert not table["changed"].any()
    # The seeds do move the shares: row-sampling intervals alone are narrower than that.
    assert table["retraining_sd"].max() > 0.005
    widths = table["delta_share_high"] - table["delta_share_low"]
    assert (widths > rows_only["delta_share_high"] - rows_only["delta_share_low"]).all()
    assert result.settings["noise"] == "rows and retraining"
    assert result.settings["retraining_dof"] == 4
    assert all("retraining noise (4 retrained copies) and row sampling" in line
               for line in result.findings if "interval" in line)


def test_retraining_noise_is_the_pooled_spread_of_the_copies(seeds):
    tmp, paths = seeds
    cfg = load_config(tmp / "cfg.yaml")
    result = compare_models(cfg, paths[0], paths[1], old_replicas=[paths[2]],
                            new_replicas=paths[3:5])
    rows = pd.read_csv(tmp / "audit.csv")
    audits = [audit_frame(torch.jit.load(str(p)), rows, features=FEATURES, label="y")
              .table.set_index("feature").loc[FEATURES, "share"] for p in paths[:5]]
    old_side, new_side = np.stack([audits[0], audits[2]]), np.stack([audits[1], *audits[3:5]])
    pooled = np.sqrt((((old_side - old_side.mean(0)) ** 2).sum(0)
                      + ((new_side - new_side.mean(0)) ** 2).sum(0)) / 3)
    table = result.table.set_index("feature").loc[FEATURES]
    np.testing.assert_allclose(table["retraining_sd"], pooled, rtol=1e-9, atol=1e-15)


def test_a_real_change_is_still_marked_with_seed_replicas(seeds):
    tmp, paths = seeds
    result = compare_models(load_config(tmp / "cfg.yaml"), paths[0], tmp / "changed.pt",
                            old_replicas=paths[1:4])
    table = result.table.set_index("feature")
    assert table.loc["b", "changed"] and table.loc["b", "delta_share"] > 0.1
    assert any(line.startswith("b's share rose") for line in result.findings)


def test_min_change_keeps_small_changes_unmarked(seeds):
    tmp, paths = seeds
    cfg = yaml.safe_load((tmp / "cfg.yaml").read_text())
    results = {}
    for min_change in (0, 50):
        cfg["compare"] = {"min_change": min_change, "bootstrap_samples": 200}
        (tmp / f"cfg{min_change}.yaml").write_text(yaml.safe_dump(cfg))
        results[min_change] = compare_models(load_config(tmp / f"cfg{min_change}.yaml"),
                                             paths[0], tmp / "changed.pt").table
    assert results[0]["changed"].equals(results[0]["significant"])
    assert results[0]["changed"].any() and not results[50]["changed"].any()
    assert results[50]["significant"].equals(results[0]["significant"])


def test_cli_speaks_in_points_names_the_noise_and_expands_globs(seeds):
    tmp, paths = seeds
    runner = CliRunner()
    out = tmp / "cmp"
    done = runner.invoke(app, ["compare", str(paths[0]), str(tmp / "changed.pt"), "--config",
                               str(tmp / "cfg.yaml"), "--out", str(out)])
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "change: new share - old share, in share points" in text
    assert ("* outside its 95% interval (row-sampling noise only) and at least 2 points "
            "(compare.min_change)") in text
    assert "Retraining noise is not measured" in text
    assert "%*" not in done.output
    markdown = (out / "comparison.md").read_text()
    assert "| change (points) |" in markdown and "row-sampling noise only" in markdown
    done = runner.invoke(app, ["compare", str(paths[0]), str(paths[1]), "--config",
                               str(tmp / "cfg.yaml"), "--out", str(out), "-q",
                               "--old-replica", str(tmp / "seed[23].pt"),
                               "--new-replica", str(paths[4]), "--new-replica", str(paths[5])])
    assert done.exit_code == 0, done.output
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["settings"]["old_replicas"] == [str(paths[2]), str(paths[3])]
    assert summary["settings"]["new_replicas"] == [str(paths[4]), str(paths[5])]
    assert not any(f["changed"] for f in summary["features"])
    done = runner.invoke(app, ["compare", str(paths[0]), str(paths[1]), "--config",
                               str(tmp / "cfg.yaml"), "--new-replica", str(tmp / "nope*.pt")])
    assert done.exit_code == 2
    assert " ".join(done.output.split()) == (
        f"Error: {tmp / 'nope*.pt'}: no model file matches this pattern (--new-replica)")


class TwoOutputs(torch.nn.Module):
    def __init__(self, w: list[list[float]]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.t()


def test_every_finding_of_a_multi_output_model_names_its_output(tmp_path: Path):
    rng = np.random.default_rng(1)
    pd.DataFrame(rng.normal(size=(300, 4)), columns=FEATURES).to_csv(tmp_path / "d.csv",
                                                                     index=False)
    old = [[1.0, 0.2, 0.1, 0.1], [0.2, 1.0, 0.2, 0.1]]
    new = [[0.2, 1.0, 0.1, 0.1], [0.2, 0.2, 1.0, 0.1]]
    for name, w in (("old", old), ("new", new)):
        torch.jit.save(torch.jit.script(TwoOutputs(w)), str(tmp_path / f"{name}.pt"))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({
        "data": {"path": "d.csv"}, "model": {"path": "old.pt", "output_names": ["ctr", "cvr"]},
        "audit": {"proxies": [{"feature": "a", "max_share": 0.5}]},
        "compare": {"max_proxy_share_increase": 0.01, "bootstrap_samples": 100},
        "report": {"dir": "out"}}))
    result = compare_models(load_config(tmp_path / "cfg.yaml"), tmp_path / "old.pt",
                            tmp_path / "new.pt")
    assert result.findings and all(line.startswith(("Output 'ctr': ", "Output 'cvr': "))
                                   for line in result.findings)
    assert any("a was flagged by the old model" in line for line in result.findings)
    swapped = compare_models(load_config(tmp_path / "cfg.yaml"), tmp_path / "new.pt",
                             tmp_path / "old.pt")
    grown = [line for line in swapped.findings if "grew by" in line]
    assert grown and grown[0].startswith("Output 'ctr': a's share grew by +")
    assert "points, more than the allowed 1.0 points" in grown[0]
