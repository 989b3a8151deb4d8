"""Suspected proxies: planted cases the audit is not told about, the figures against direct
computations, mergeable accumulators, reports, the gate, and what runs without labels.

The planted case: the label depends on r1, r2, r3 (logit 1.2 r1 + 0.4 r2 + 1.5 r3, features of
std 1, 2, 0.5). In the training extract a nuisance column leaks the label (nuisance = 30 x
(leak x standardized label + noise) + 100); in the audit extract it is pure noise. c1 and c2 are
noise everywhere. A scorer trained on the training extract leans on the nuisance; on the audit
rows the labels give it no support, and it takes a larger part of the misscored rows.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from sensaudit import AuditSettings, ProxyLimit, audit_frame
from sensaudit.checks.evidence import (
    GroupedMoments,
    LabelGram,
    additive_evidence,
    misscored_groups,
    misscored_keys,
    top_bins,
)
from sensaudit.checks.suspects import SuspectedProxies
from sensaudit.cli.app import app
from sensaudit.methods.base import Attributions
from sensaudit.settings.sections import MisscoredRule
from sensaudit.stats.accumulators import PoissonBootstrap

FEATURES = ["r1", "r2", "r3", "nuisance", "c1", "c2"]
REAL = ["r1", "r2", "r3"]


def extract(rng: np.random.Generator, rows: int, leak: float, binary: bool) -> pd.DataFrame:
    r = rng.normal(size=(rows, 3)) * [1.0, 2.0, 0.5]
    logit = 1.2 * r[:, 0] + 0.4 * r[:, 1] + 1.5 * r[:, 2]
    y = (rng.binomial(1, 1 / (1 + np.exp(-logit))).astype(float) if binary
         else logit + rng.normal(size=rows))
    nuisance = (leak * (y - y.mean()) / y.std() + rng.normal(size=rows)) * 30 + 100
    noise = rng.normal(size=(rows, 2)) * [3.0, 0.2]
    frame = pd.DataFrame(np.column_stack([r, nuisance, noise]), columns=FEATURES)
    frame["y"] = y
    return frame


@contextmanager
def one_thread():
    # Tiny full-batch training is 20x slower with threads fighting over 2 shared cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Scorer(torch.nn.Module):
    """net((x - mean) / std), through a sigmoid for a 0/1 label."""

    def __init__(self, net: torch.nn.Module, x: torch.Tensor, binary: bool):
        super().__init__()
        self.net, self.binary = net, binary
        self.register_buffer("mean", x.mean(0))
        self.register_buffer("std", x.std(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net((x - self.mean) / self.std)
        return torch.sigmoid(out) if self.binary else out


def train(frame: pd.DataFrame, kind: str, seed: int, binary: bool) -> Scorer:
    """kind: 'linear' (logistic or least-squares regression) or 'mlp' (6-16-1 tanh)."""
    torch.manual_seed(seed)
    x = torch.tensor(frame[FEATURES].to_numpy())
    y = torch.tensor(frame["y"].to_numpy())[:, None]
    net = (torch.nn.Linear(6, 1) if kind == "linear" else torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))).double()
    scorer = Scorer(net, x, binary)
    loss = torch.nn.BCEWithLogitsLoss() if binary else torch.nn.MSELoss()
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.03, weight_decay=0.01)
    with one_thread():
        for _ in range(200):
            optimizer.zero_grad()
            loss(net((x - scorer.mean) / scorer.std), y).backward()
            optimizer.step()
    return scorer.eval()


def suspects_of(result) -> tuple[pd.DataFrame, dict]:
    check = next(c for c in result.checks if c.check == "suspects")
    return check.tables["suspects.csv"].set_index("feature"), check.summary


CASES = [("linear", True, MisscoredRule("threshold", 0.5)), ("mlp", True, None),
         ("linear", False, None), ("mlp", False, MisscoredRule("abs_error_above", 1.5))]


@pytest.mark.parametrize("kind,binary,rule", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_planted_nuisance_is_the_top_suspect_and_clean_features_are_not(kind, binary, rule,
                                                                          seed):
    rng = np.random.default_rng(seed)
    model = train(extract(rng, 2000, leak=1.5, binary=binary), kind, seed, binary)
    audit_rows = extract(rng, 1500, leak=0.0, binary=binary)
    result = audit_frame(model, audit_rows, label="y",
                         settings=AuditSettings(misscored=rule, fail_on_suspects=True))
    table, summary = suspects_of(result)
    flagged = [s["feature"] for s in summary["suspects"]]
    # The planted nuisance first; no real feature ever. c1 and c2 are pure noise the label never
    # followed: a model leaning on one and measurably better without it may have it flagged too.
    assert flagged[0] == "nuisance" and set(flagged) <= {"nuisance", "c1", "c2"}
    assert all(table.loc[f, "confirmed"] for f in flagged)
    assert not result.passed and [g.subject for g in result.gates.flags] == flagged
    reasons = summary["suspects"][0]["reasons"]
    assert reasons[0].startswith("relied on beyond its evidence")
    nuisance = table.loc["nuisance"]
    assert nuisance["share"] - nuisance["evidence_high"] >= 0.10
    if binary:  # the nuisance pushes rows across the threshold: a clear contrast
        assert nuisance["contrast_low"] > 0
        assert any(r.startswith("larger on misscored rows") for r in reasons)
    else:  # a continuous label's large errors are mostly its own noise: measured, not asserted
        assert np.isfinite(nuisance["contrast"])
    # Every real feature is relied on less than the labels support it.
    assert (table.loc[REAL, "reliance_gap"] < 0).all()
    assert not table.loc[REAL, "suspect"].any()


@pytest.mark.parametrize("kind,binary,rule", CASES)
def test_a_model_trained_without_the_leak_has_no_suspect(kind, binary, rule):
    rng = np.random.default_rng(7)
    model = train(extract(rng, 2000, leak=0.0, binary=binary), kind, 7, binary)
    result = audit_frame(model, extract(rng, 1500, leak=0.0, binary=binary), label="y",
                         settings=AuditSettings(misscored=rule, fail_on_suspects=True))
    table, summary = suspects_of(result)
    # No real feature is suspected. nuisance (no leak here), c1 and c2 are noise the label never
    # followed: a model that leans on one and is measurably better without it has it flagged
    # (reliance without evidence, as a proxy is), and only then.
    flagged = [s["feature"] for s in summary["suspects"]]
    assert set(flagged) <= {"nuisance", "c1", "c2"} and result.passed == (not flagged)
    assert all(table.loc[f, "confirmed"] and table.loc[f, "loss_change_high"] < 0
               for f in flagged)
    assert summary["suspect_signals"]["reliance_vs_evidence"] == "ran on 1,500 labelled rows"
    assert summary["suspect_signals"]["misscored_contrast"].startswith("ran: ")
    assert not table.loc[REAL, "suspect"].any()


def test_declared_proxies_are_left_to_their_limits():
    rng = np.random.default_rng(0)
    model = train(extract(rng, 2000, leak=1.5, binary=True), "linear", 0, True)
    settings = AuditSettings(proxies=(ProxyLimit("nuisance", max_share=0.9),),
                             fail_on_suspects=True)
    result = audit_frame(model, extract(rng, 1500, 0.0, True), label="y", settings=settings)
    table, summary = suspects_of(result)
    assert summary["suspects"] == [] and result.passed
    assert table.loc["nuisance", "declared"] and not table.loc["nuisance", "suspect"]


# --- the figures, against direct computations ---------------------------------------------------


class Linear(torch.nn.Module):
    """y = x W' (float64): gradient W on every row; one output when W is a vector."""

    def __init__(self, w: list):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.t() if self.w.dim() == 2 else x @ self.w


def linear_case(rows: int = 400, seed: int = 3):
    """y_hat = x . w (linear, gradient w on every row); label y = x . beta + noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)) * [1.0, 3.0, 0.5, 2.0]
    beta = np.array([1.0, 0.0, 2.0, -0.25])
    frame = pd.DataFrame(x, columns=list("abcd"))
    frame["y"] = x @ beta + rng.normal(size=rows) * 0.5
    w = [0.8, 0.3, 1.5, 0.0]
    return frame, Linear(w), np.array(w)


def test_misscored_shares_and_interval_match_a_direct_computation():
    """For a linear scorer, the share on a set of rows S is std_S(x_j) |w_j| / sum_k (same),
    and each bootstrap replicate's is the same with weighted stds under its Poisson weights."""
    frame, model, w = linear_case()
    settings = AuditSettings(misscored=MisscoredRule("abs_error_above", 1.0),
                             checks={"suspects": {"bootstrap_samples": 50, "seed": 4}})
    table, summary = suspects_of(audit_frame(model, frame, label="y", settings=settings))
    x = frame[list("abcd")].to_numpy()
    error = np.abs(x @ w - frame["y"].to_numpy())
    mis = error > 1.0
    weights = PoissonBootstrap(50, 4).weights(np.arange(1, len(frame) + 1)).numpy()

    def shares(rows: np.ndarray, wt: np.ndarray) -> np.ndarray:
        xs, ws = x[rows], wt[rows]
        mean = ws @ xs / ws.sum()
        std = np.sqrt(ws @ (xs - mean) ** 2 / (ws.sum() - 1))
        scaled = std * np.abs(w)
        return scaled / scaled.sum()

    ones = np.ones(len(frame))
    expected = shares(mis, ones) - shares(~mis, ones)
    replicates = np.array([shares(mis, wb) - shares(~mis, wb) for wb in weights])
    got = table.loc[list("abcd")]
    np.testing.assert_allclose(got["share_misscored"], shares(mis, ones), rtol=1e-9)
    np.testing.assert_allclose(got["contrast"], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["contrast_low"], np.quantile(replicates, 0.025, axis=0),
                               rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got["contrast_high"], np.quantile(replicates, 0.975, axis=0),
                               rtol=1e-8, atol=1e-12)
    assert summary["suspect_signals"]["misscored_contrast"].startswith(
        f"ran: {mis.sum()} misscored rows")


def test_evidence_recovers_a_linear_labels_standardized_weights():
    """y = x . beta + noise, independent features: the fit's part for feature j has std
    |beta_j| std_j, so the evidence shares are |beta_j| std_j / sum (up to sampling)."""
    rng = np.random.default_rng(0)
    rows = 20_000
    std = np.array([1.0, 3.0, 0.5, 2.0])
    beta = np.array([1.0, 0.0, 2.0, -0.25])
    x = rng.normal(size=(rows, 4)) * std + [5.0, -2.0, 100.0, 0.0]
    y = x @ beta + rng.normal(size=rows)
    gram = LabelGram(4)
    gram.update(torch.from_numpy(x), torch.from_numpy(y))
    evidence = additive_evidence(gram, ridge=0.0)
    assert evidence is not None and evidence.rows == rows
    expected = np.abs(beta) * std / (np.abs(beta) * std).sum()
    np.testing.assert_allclose(evidence.share, expected, atol=0.01)
    assert evidence.share[1] < 0.005  # no support beyond its noise
    # The noise term is the fitted part's expected size under no relation: about
    # sqrt(2 x residual variance / rows) in label stds for a feature and its square.
    resid = 1.0 / y.std()
    np.testing.assert_allclose(evidence.noise, np.sqrt(2 / rows) * resid, rtol=0.15)


def test_evidence_sees_a_u_shaped_effect():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5000, 2))
    y = x[:, 0] ** 2 + 0.1 * rng.normal(size=5000)  # no linear trend at all
    gram = LabelGram(2)
    gram.update(torch.from_numpy(x), torch.from_numpy(y))
    evidence = additive_evidence(gram, ridge=0.01)
    assert evidence is not None and evidence.share[0] > 0.98


def _misscored(scores, labels, rule, on_probability=False) -> list[int]:
    keys = misscored_keys(np.asarray(scores, float), np.asarray(labels, float), rule)
    counts = {int(k): float((keys == k).sum()) for k in np.unique(keys)}
    chosen, _ = misscored_groups(counts, rule, on_probability)
    return np.flatnonzero(np.isin(keys, list(chosen))).tolist()


def test_misscored_rules():
    scores = np.array([0.9, 0.2, 0.6, 0.4, 0.5])
    labels = np.array([1.0, 1.0, 0.0, 0.0, 0.5])
    assert _misscored(scores, labels, MisscoredRule("threshold", 0.5)) == [1, 2]
    assert _misscored(scores, labels, MisscoredRule("abs_error_above", 0.5)) == [1, 2]
    errors = np.array([0.0, 0.01, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8])
    rule = MisscoredRule("top_error_quantile", 0.3)
    assert _misscored(errors + 0.5, np.full(10, 0.5), rule) == [7, 8, 9]  # not a 0/1 label
    keys = misscored_keys(errors, np.zeros(10), rule)
    counts = {int(k): float((keys == k).sum()) for k in np.unique(keys)}
    chosen, fraction = misscored_groups(counts, rule, False)
    assert fraction == pytest.approx(0.3)
    assert sorted(np.flatnonzero(np.isin(keys, list(chosen)))) == [7, 8, 9]
    assert top_bins({5: 10.0}, 0.1) is None


def test_misscored_on_a_0_1_label_is_judged_in_the_label_units():
    # Logits against 0/1 labels: the decision at 0 against the class, not the logit's side of
    # 0 against the label's (main: every negative logit was misscored, label 0 or not).
    logits = np.array([265.0, 3.0, -2.0, -7.0, 0.5, -0.2, 40.0, -30.0])
    labels = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    assert _misscored(logits, labels, MisscoredRule("threshold", 0.0)) == [4, 5]
    # On the probability: the confident right answers (265 for a 1, -30 for a 0) are the
    # least wrong, the two rows on the wrong side the most.
    top = MisscoredRule("top_error_quantile", 0.25)
    assert _misscored(logits, labels, top, on_probability=True) == [4, 5]
    assert 0 in _misscored(logits, labels, top)  # |265 - 1| on the raw scale
    assert _misscored(logits, labels, MisscoredRule("abs_error_above", 0.5),
                      on_probability=True) == [4, 5]
    # A label that is not 0/1 keeps its own side of the threshold.
    assert _misscored([0.2, 2.5, 3.5], [3.0, 2.0, 2.5], MisscoredRule("threshold", 3.0)) == [0, 2]


# --- accumulators merge -------------------------------------------------------------------------


def _partitions(rows: int, k: int, seed: int) -> list[np.ndarray]:
    owner = np.random.default_rng(seed).integers(0, k, size=rows)
    return [np.flatnonzero(owner == part) for part in range(k)]


SPLITS = [(2, 0), (5, 1), (9, 2)]


@pytest.mark.parametrize("k,seed", SPLITS)
def test_grouped_moments_merge(k, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(301, 3, generator=generator, dtype=torch.float64) * 4 + 50
    a = torch.randn(301, 3, generator=generator, dtype=torch.float64).abs()
    rows = np.arange(1, 302) * 2
    keys = np.random.default_rng(seed).integers(-3, 3, size=301)
    bootstrap = PoissonBootstrap(30, seed=5)
    single = GroupedMoments(bootstrap, 3)
    single.update(rows, keys, x, a)
    merged = GroupedMoments(bootstrap, 3)
    for index in _partitions(301, k, seed):
        part = GroupedMoments(bootstrap, 3)
        part.update(rows[index], keys[index], x[index], a[index])
        merged.merge(part)
    assert merged.counts() == single.counts()
    for group in ({-3, 0}, {1}, set(range(-3, 3))):
        for per_unit in (True, False):
            n1, s1 = single.scaled(group, per_unit)
            n2, s2 = merged.scaled(group, per_unit)
            torch.testing.assert_close(n2, n1, rtol=0, atol=0)
            torch.testing.assert_close(s2, s1, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k,seed", SPLITS)
def test_label_gram_merge(k, seed):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(size=(257, 3)) * [1, 50, 0.1] + [0, 1e3, -5])
    y = torch.from_numpy(rng.normal(size=257) + 3)
    single = LabelGram(3)
    single.update(x, y)
    merged = LabelGram(3)
    for index in _partitions(257, k, seed):
        part = LabelGram(3)
        part.update(x[index], y[index])
        merged.merge(part)
    g1, mean1 = single.centred()
    g2, mean2 = merged.centred()
    torch.testing.assert_close(mean2, mean1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g2, g1, rtol=1e-8, atol=1e-6)
    e1, e2 = additive_evidence(single, 0.01), additive_evidence(merged, 0.01)
    assert e1 is not None and e2 is not None
    np.testing.assert_allclose(e2.support, e1.support, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("rule", [MisscoredRule("top_error_quantile", 0.2),
                                  MisscoredRule("threshold", 0.0)])
def test_the_whole_check_merges_to_the_single_pass(rule):
    frame, model, _ = linear_case(rows=300)
    x = torch.tensor(frame[list("abcd")].to_numpy())
    labels = frame["y"].to_numpy()
    scores = model(x).detach()[:, None]
    values = torch.tensor([0.8, 0.3, 1.5, 0.0], dtype=torch.float64).expand(300, 1, 4)
    rows = np.arange(1, 301)
    settings = AuditSettings(misscored=rule, checks={"suspects": {"bootstrap_samples": 40}})

    def check(index: np.ndarray) -> SuspectedProxies:
        built = SuspectedProxies.from_settings(settings)
        t = torch.from_numpy(index)
        built.update(rows[index], x[t], Attributions(scores[t], values[t]), labels[index])
        return built

    single = check(np.arange(300))
    merged = SuspectedProxies.from_settings(settings)
    for index in _partitions(300, 4, 3):
        merged.merge(check(index))
    ranking = audit_frame(model, frame, label="y", settings=settings)
    from sensaudit.checks.base import Ranking

    rank = Ranking(table=ranking.table, features=list("abcd"), outputs=["score"])
    a, b = single.finish(rank), merged.finish(rank)
    pd.testing.assert_frame_equal(a.tables["suspects.csv"], b.tables["suspects.csv"],
                                  check_exact=False, rtol=1e-9, atol=1e-12)


def test_results_do_not_depend_on_the_chunk_size():
    rng = np.random.default_rng(0)
    model = train(extract(rng, 2000, leak=1.5, binary=True), "linear", 0, True)
    rows = extract(rng, 700, leak=0.0, binary=True)
    whole = suspects_of(audit_frame(model, rows, label="y"))[0]
    chunked = suspects_of(audit_frame(model, rows, label="y", chunk_rows=97))[0]
    pd.testing.assert_frame_equal(whole, chunked, check_exact=False, rtol=1e-9, atol=1e-12)


# --- without labels, several outputs, reports ------------------------------------------------


def test_without_labels_only_dominance_runs_and_says_why():
    frame, model, _ = linear_case()
    result = audit_frame(model, frame.drop(columns="y"),
                         settings=AuditSettings(fail_on_suspects=True))
    table, summary = suspects_of(result)
    signals = summary["suspect_signals"]
    assert signals == {"dominance": "ran",
                       "reliance_vs_evidence": "not run: the audit has no label (set data.label)",
                       "misscored_contrast": "not run: the audit has no label (set data.label)"}
    # c holds 0.5 x 1.5 / (1 x 0.8 + 3 x 0.3 + 0.5 x 1.5) ~ 31%: not dominant, so no suspect.
    assert summary["suspects"] == [] and result.passed
    assert any("could not" not in n and "not run: the audit has no label" in n
               for n in result.findings)
    dominated = audit_frame(Linear([0.1, 1.0, 0.1, 0.0]), frame.drop(columns="y"),
                            settings=AuditSettings(fail_on_suspects=True))
    _, summary = suspects_of(dominated)
    assert [s["feature"] for s in summary["suspects"]] == ["b"]
    assert summary["suspects"][0]["reasons"][0].startswith("dominant: ")
    assert summary["suspects"][0]["evidence_share"] is None


def test_several_outputs_with_one_label_skip_the_label_signals():
    frame, _, _ = linear_case()
    result = audit_frame(Linear([[0.8, 0.3, 1.5, 0.0], [0.1, 0.1, 0.1, 1.0]]), frame, label="y")
    _, summary = suspects_of(result)
    assert summary["suspect_signals"]["reliance_vs_evidence"] == (
        "not run: the model has 2 outputs and the label scores one of them (select it with "
        "model.output)")


def test_reports_and_the_gate_through_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    model = train(extract(rng, 2000, leak=1.5, binary=True), "linear", 0, True)
    extract(rng, 800, 0.0, True).to_csv(tmp_path / "audit.csv", index=False)
    program = torch.export.export(model, (torch.zeros(4, 6, dtype=torch.float64),),
                                  dynamic_shapes=({0: torch.export.Dim("rows")},))
    torch.export.save(program, str(tmp_path / "model.pt2"))
    cfg = {"model": {"path": "model.pt2"}, "data": {"path": "audit.csv", "label": "y"},
           "audit": {"misscored": {"threshold": 0.5}, "fail_on_suspects": True},
           "report": {"dir": "out"}}
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(cfg))
    done = CliRunner().invoke(app, ["run", str(tmp_path / "audit.yaml")])
    assert done.exit_code == 1, done.output
    assert "nuisance is a suspected proxy: relied on beyond its evidence" in done.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["feature"] for s in summary["suspects"]] == ["nuisance"]
    assert {"feature", "output", "reasons", "share", "evidence_share", "evidence_high",
            "reliance_gap", "share_misscored", "share_rest", "contrast", "contrast_low",
            "contrast_high", "dominant"} <= set(summary["suspects"][0])
    assert [f["feature"] for f in summary["flags"]] == ["nuisance"]
    csv = pd.read_csv(tmp_path / "out" / "suspects.csv")
    assert csv["feature"].iloc[0] == "nuisance" and csv["suspect"].tolist()[:2] == [True, False]
    # Independent of the other inputs: they predict next to nothing of it (a chance fit on 800
    # rows, shrunk by its adjusted R^2), so about its whole value was averaged out.
    predicted = csv["predicted_by_others"].iloc[0]
    assert 0 <= predicted < 0.01
    assert summary["suspects"][0]["predicted_by_others"] == pytest.approx(predicted, rel=1e-6)
    assert len(csv) == len(FEATURES)
    report = (tmp_path / "out" / "report.md").read_text()
    section = report.split("## Suspected proxies")[1].split("## Feature sensitivity")[0]
    assert "| nuisance | score |" in section
    sensitivity = pd.read_csv(tmp_path / "out" / "sensitivity.csv").set_index("feature")
    assert sensitivity.loc["nuisance", "flagged"]
    assert "- Verdict: 1 flag(s), 0 warning(s): nuisance (suspects)\n" in report
    # Not gated: the same suspect is a warning and the audit passes; the reports say, under
    # the verdict, what it warns of.
    cfg["audit"]["fail_on_suspects"] = False
    cfg["report"] = {"dir": "out2", "formats": ["markdown", "json", "html"]}
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(cfg))
    done = CliRunner().invoke(app, ["run", str(tmp_path / "audit.yaml"), "-q"])
    assert done.exit_code == 0, done.output
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert summary["passed"] and [w["feature"] for w in summary["warnings"]] == ["nuisance"]
    report = (tmp_path / "out2" / "report.md").read_text()
    assert report.startswith("# sensaudit: PASSED\n\n- Verdict: 0 flag(s), 1 warning(s): "
                             "nuisance (suspects)\n")
    page = (tmp_path / "out2" / "report.html").read_text()
    assert "<p>0 flag(s), 1 warning(s): nuisance (suspects)</p>" in page


@pytest.mark.parametrize("audit, expected", [
    ({"misscored": {"threshold": 0.5, "abs_error_above": 1}},
     "audit.misscored must be a mapping with exactly one of abs_error_above, "
     "top_error_quantile, threshold (got {'abs_error_above': 1, 'threshold': 0.5}, a dict)"),
    ({"misscored": {"top_error_quantile": 1.5}},
     "audit.misscored.top_error_quantile must be a number strictly between 0 and 1 (got 1.5, "
     "a float)"),
    ({"misscored": {"top_eror_quantile": 0.1}},
     "unknown key 'top_eror_quantile' in audit.misscored; did you mean 'top_error_quantile'? "
     "(allowed: abs_error_above, top_error_quantile, threshold)"),
    ({"fail_on_suspects": "yes"}, "audit.fail_on_suspects must be true or false (got 'yes', a "
                                  "str)"),
    ({"checks": {"suspects": {"min_gap": 2}}},
     "audit.checks.suspects.min_gap must be a number from 0 to 1 (got 2, an int)"),
    ({"checks": {"suspects": {"min_gapp": 0.1}}},
     "unknown key 'min_gapp' in audit.checks.suspects; did you mean 'min_gap'? (allowed: "
     "min_gap, harm_level, harm_rows, min_contrast, "
     "min_misscored_rows, bootstrap_samples, confidence, seed, ridge, tie_level)"),
])
def test_bad_suspect_settings_exit_2_naming_the_key(tmp_path, audit, expected):
    frame, model, _ = linear_case(rows=20)
    frame.to_csv(tmp_path / "d.csv", index=False)
    torch.jit.save(torch.jit.script(model), str(tmp_path / "m.pt2"))
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": "m.pt2"}, "data": {"path": "d.csv"},
                                    "audit": audit, "report": {"dir": "out"}}))
    done = CliRunner().invoke(app, ["run", str(path)])
    assert done.exit_code == 2
    assert done.output.strip().replace("\n", "") == f"Error: {path}: {expected}"


def test_a_misscored_rule_built_in_python_is_checked():
    with pytest.raises(Exception, match="top_error_quantile must be a number strictly between"):
        MisscoredRule("top_error_quantile", 0.0)
    assert replace(MisscoredRule(), value=0.5).value == 0.5

