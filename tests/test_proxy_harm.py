"""The suspects' confirmation test (checks/proxy_harm.py): its figures against a direct numpy
computation on a linear model, its verdicts both ways, its bounded sample, and its power
against a pure proxy (the "cannot judge" warning)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import torch

from sensaudit.checks.proxy_harm import (
    LEVELS,
    Harm,
    averaged_out,
    feature_levels,
    harm_tests,
    own_part,
)
from sensaudit.checks.suspects import SuspectedProxies, SuspectsOptions
from sensaudit.settings.sections import AuditSettings


def _case(rows: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    genuine = rng.normal(size=rows)
    proxy = rng.integers(0, 4, rows).astype(float)  # 4 levels: averaged out exactly
    x = np.column_stack([genuine, proxy])
    y = 2.0 * genuine + rng.normal(scale=0.5, size=rows)
    weights = torch.tensor([[2.0], [0.8]], dtype=torch.float64)
    return x, y, (lambda t: t @ weights)


def test_the_loss_change_is_the_direct_computation_and_a_proxy_is_confirmed():
    x, y, model = _case()
    found = harm_tests(model, torch.from_numpy(x), y, ["genuine", "proxy"], ["proxy"],
                       level=0.05, confidence=0.95, on_probability=False)
    harm = found["proxy"]
    score = 2.0 * x[:, 0] + 0.8 * x[:, 1]
    values, counts = np.unique(x[:, 1], return_counts=True)
    averaged = score - 0.8 * x[:, 1] + 0.8 * (values * counts / counts.sum()).sum()
    d = (averaged - y) ** 2 - (score - y) ** 2
    error = d.std(ddof=1) / math.sqrt(len(d))
    assert math.isclose(harm.change, d.mean(), rel_tol=1e-12)
    assert math.isclose(harm.base, ((score - y) ** 2).mean(), rel_tol=1e-12)
    assert math.isclose(harm.low, d.mean() - 1.959963984540054 * error, rel_tol=1e-9)
    assert math.isclose(harm.z, d.mean() / error, rel_tol=1e-12)
    assert harm.change < 0 and harm.confirmed and harm.rows == len(y)


def test_a_feature_the_label_follows_is_not_confirmed():
    x, y, model = _case(seed=1)
    found = harm_tests(model, torch.from_numpy(x), y, ["genuine", "proxy"],
                       ["genuine", "proxy"], level=0.05, confidence=0.95, on_probability=False)
    assert found["genuine"].change > 0 and not found["genuine"].confirmed
    assert found["proxy"].confirmed


def test_logit_scores_are_judged_on_the_probability():
    x, _, model = _case(rows=1500, seed=2)
    rng = np.random.default_rng(2)
    label = (rng.random(len(x)) < 1 / (1 + np.exp(-2.0 * x[:, 0]))).astype(float)
    harm = harm_tests(model, torch.from_numpy(x), label, ["genuine", "proxy"], ["proxy"],
                      level=0.05, confidence=0.95, on_probability=True)["proxy"]
    logit = 2.0 * x[:, 0] + 0.8 * x[:, 1]
    score = 1 / (1 + np.exp(-logit))
    assert math.isclose(harm.base, ((score - label) ** 2).mean(), rel_tol=1e-12)
    # The effect is averaged out as probabilities (the squared error is convex in those).
    values, counts = np.unique(x[:, 1], return_counts=True)
    moved = logit[None, :] - 0.8 * x[None, :, 1] + 0.8 * values[:, None]
    averaged = ((counts / counts.sum())[:, None] / (1 + np.exp(-moved))).sum(0)
    d = (averaged - label) ** 2 - (score - label) ** 2
    assert math.isclose(harm.change, d.mean(), rel_tol=1e-10)
    assert harm.confirmed


def test_a_continuous_feature_is_averaged_over_sixteen_quantiles():
    column = np.linspace(0.0, 1.0, 1001)
    values, weights = feature_levels(column)
    assert len(values) == LEVELS and math.isclose(weights.sum(), 1.0)
    np.testing.assert_allclose(values, np.quantile(column, (np.arange(16) + 0.5) / 16,
                                                method="inverted_cdf"))
    assert set(values) <= set(column)  # values the feature takes


def test_wide_data_keeps_fewer_sample_rows():
    sample = SuspectedProxies(AuditSettings(), SuspectsOptions()).sample
    assert sample.keep(64) == 4096  # harm_rows
    assert sample.keep(10_000) == 2**23 // 10_001
    assert sample.keep(10**6) == 256


def test_a_model_that_fails_on_moved_rows_leaves_the_candidates_unconfirmed_with_a_reason():
    import pandas as pd

    from sensaudit import audit_frame

    x, y, _ = _case(rows=600, seed=3)

    class Picky(torch.nn.Module):
        """2 x genuine + 3 x proxy, refusing batches larger than the audit's own."""

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            if t.shape[0] > 600:
                raise RuntimeError("batch too large for this scorer")
            return t[:, :1] * 2.0 + t[:, 1:2] * 3.0

    frame = pd.DataFrame(x, columns=["genuine", "proxy"]).assign(label=y)
    result = audit_frame(Picky(), frame, label="label", settings=AuditSettings())
    check = next(c for c in result.checks if c.check == "suspects")
    status = check.summary["suspect_signals"]["confirmation"]
    assert status.startswith("not run: the model failed on rows with a feature's values moved "
                             "(batch too large for this scorer)")
    assert [s["feature"] for s in check.summary["suspects"]] == ["proxy"]


def test_the_power_is_against_a_pure_proxy_of_the_measured_effect():
    # A pure proxy's expected loss change is -mean(c^2), c the feature's effect on each row
    # (here 0.8 x the level's distance from the levels' mean); the power is the chance the
    # one-sided test at 5% / 2 candidates confirms a fall of that size.
    x, y, model = _case(rows=300, seed=3)
    found = harm_tests(model, torch.from_numpy(x), y, ["genuine", "proxy"],
                       ["genuine", "proxy"], level=0.05, confidence=0.95, on_probability=False)
    harm = found["proxy"]
    values, counts = np.unique(x[:, 1], return_counts=True)
    effect = 0.8 * (x[:, 1] - (values * counts / counts.sum()).sum())
    assert math.isclose(harm.proxy_change, -(effect**2).mean(), rel_tol=1e-12)
    error = (harm.high - harm.change) / 1.959963984540054
    expected = NormalDist().cdf((effect**2).mean() / error - NormalDist().inv_cdf(1 - 0.025))
    assert math.isclose(harm.power, expected, rel_tol=1e-6)


def test_an_unconfirmed_candidate_is_cleared_only_by_a_test_that_could_have_confirmed_it():
    # Many rows and a genuine feature: not confirmed, and the test was strong enough to clear.
    x, y, model = _case(rows=2000, seed=4)
    genuine = harm_tests(model, torch.from_numpy(x), y, ["genuine", "proxy"], ["genuine"],
                         level=0.05, confidence=0.95, on_probability=False)["genuine"]
    assert not genuine.confirmed and genuine.power > 0.99 and not genuine.unjudged
    # 40 rows and a proxy with a small effect: the test could not see it, and says so.
    x, y, _ = _case(rows=40, seed=5)
    weak = torch.tensor([[2.0], [0.05]], dtype=torch.float64)
    harm = harm_tests(lambda t: t @ weak, torch.from_numpy(x), y, ["genuine", "proxy"],
                      ["proxy"], level=0.05, confidence=0.95, on_probability=False)["proxy"]
    assert not harm.confirmed and harm.power < 0.8 and harm.unjudged
    words = harm.cannot_judge(on_probability=False)
    assert words.startswith("these 40 labelled rows cannot tell whether the model does better")
    assert f"with probability {harm.power:.0%} only" in words


def test_the_stated_power_is_the_rate_at_which_pure_proxies_are_confirmed():
    # 300 small audits of a proxy the label ignores: the share confirmed matches the mean of
    # the powers the test stated (the figure a user reads is the rate they get).
    stated, confirmed = [], []
    for seed in range(300):
        rng = np.random.default_rng(1000 + seed)
        genuine, proxy = rng.normal(size=80), rng.normal(size=80)
        y = 2.0 * genuine + rng.normal(scale=0.5, size=80)
        weights = torch.tensor([[2.0], [0.25]], dtype=torch.float64)
        harm = harm_tests(lambda t, w=weights: t @ w,
                          torch.from_numpy(np.column_stack([genuine, proxy])), y,
                          ["genuine", "proxy"], ["proxy"], level=0.05, confidence=0.95,
                          on_probability=False)["proxy"]
        stated.append(harm.power)
        confirmed.append(harm.confirmed)
    assert 0.2 < np.mean(stated) < 0.9  # a case where the power is neither 0 nor 1
    assert abs(np.mean(confirmed) - np.mean(stated)) < 0.08


def test_an_audit_names_the_candidates_it_cannot_judge_as_warnings_not_suspects():
    # 60 rows scored so surely (a steep sigmoid of five genuine features) that a proxy with
    # 16% of the sensitivity moves few of them: relied on beyond its evidence, but the test's
    # power against a pure proxy is under 80%, so it is neither a suspect nor cleared.
    import pandas as pd

    from sensaudit import audit_frame

    rng = np.random.default_rng(2)
    genuine, proxy = rng.normal(size=(60, 5)), rng.normal(size=60)
    label = (genuine.sum(1) + rng.normal(scale=0.3, size=60) > 0).astype(float)
    weights = torch.tensor([[3.0]] * 5 + [[3.0]])
    frame = pd.DataFrame(np.column_stack([genuine, proxy]),
                         columns=[f"g{i}" for i in range(5)] + ["proxy"]).assign(label=label)
    result = audit_frame(lambda t: torch.sigmoid(t @ weights), frame, label="label",
                         settings=AuditSettings())
    check = next(c for c in result.checks if c.check == "suspects")
    assert check.summary["suspects"] == [] and not check.gates
    [unjudged] = check.summary["unjudged_candidates"]
    assert unjudged["feature"] == "proxy" and unjudged["power"] < 0.8
    [warning] = check.warnings
    assert warning.subject == "proxy" and warning.details["power"] == unjudged["power"]
    reasons = " ".join(unjudged["reasons"])
    assert "relied on beyond its evidence" in reasons
    assert "these 60 labelled rows cannot tell whether the model does better without it" in reasons
    assert check.summary["suspect_signals"]["confirmation"].endswith(
        "1 it cannot judge on these rows (proxy: the test's power against a pure proxy is "
        "under 80%)")
    table = check.tables["suspects.csv"].set_index("feature")
    assert bool(table.loc["proxy", "unjudged"]) and not bool(table.loc["proxy", "suspect"])
    assert not table.drop(index="proxy")["unjudged"].any()
    assert any(line.startswith("- proxy may be a proxy that this audit cannot judge: ")
               for line in check.sections["Suspected proxies"])


def test_a_feature_without_effect_is_cleared_and_a_perfect_fit_is_worded_in_loss_units():
    # The model ignores the proxy and fits the label exactly: averaging it out changes the
    # scores by rounding only, so there is nothing to miss (power 1, cleared, not "cannot
    # judge"), not a test that happens to be weak.
    x, _, _ = _case(rows=100, seed=6)
    exact = torch.tensor([[2.0], [0.0]], dtype=torch.float64)
    harm = harm_tests(lambda t: t @ exact, torch.from_numpy(x), 2.0 * x[:, 0],
                      ["genuine", "proxy"], ["proxy"], level=0.05, confidence=0.95,
                      on_probability=False)["proxy"]
    assert harm.base == 0 and abs(harm.change) < 1e-20
    assert harm.power == 1.0 and not harm.unjudged
    # The words never divide by a zero loss: changes are then given in the loss's units.
    words = Harm(feature="f", rows=40, base=0.0, change=0.002, low=-0.001, high=0.005, z=1.0,
                 confirmed=False, proxy_change=-0.003, power=0.3).cannot_judge(False)
    assert "the mean squared error 0.003 lower" in words
    assert "(interval: 0.001 lower to 0.005 higher)" in words


def test_a_feature_the_label_follows_but_the_model_overuses_is_over_relied_not_a_proxy():
    # y = a + b + c + noise on the audited rows; the model scores 4a + b + c + 2 proxy (an
    # over-fit slope on a genuine feature, and a column the label does not follow). Both are
    # relied on beyond their evidence and the model does better without either; the label's
    # fit shows a carries information (its support's lower end above 0): over-relied, a
    # warning; the proxy has none: the suspect, and the failed gate.
    import pandas as pd

    from sensaudit import audit_frame

    rng = np.random.default_rng(7)
    a, b, c, proxy = rng.normal(size=(4, 600))
    label = a + b + c + rng.normal(scale=0.5, size=600)
    weights = torch.tensor([[4.0], [1.0], [1.0], [2.0]])
    frame = pd.DataFrame({"a": a, "b": b, "c": c, "proxy": proxy, "label": label})
    result = audit_frame(lambda t: t @ weights, frame, label="label",
                         settings=AuditSettings(fail_on_suspects=True))
    check = next(c for c in result.checks if c.check == "suspects")
    table = check.tables["suspects.csv"].set_index("feature")
    assert table.loc["a", "evidence_low"] > 0 and table.loc["proxy", "evidence_low"] == 0
    assert table.loc["a", "evidence_low"] <= table.loc["a", "evidence_share"] \
        <= table.loc["a", "evidence_high"]
    assert bool(table.loc["a", "confirmed"]) and bool(table.loc["proxy", "confirmed"])
    assert bool(table.loc["a", "over_relied"]) and not bool(table.loc["a", "suspect"])
    assert bool(table.loc["proxy", "suspect"]) and not bool(table.loc["proxy", "over_relied"])
    assert [s["feature"] for s in check.summary["suspects"]] == ["proxy"]
    assert [g.subject for g in check.gates] == ["proxy"]
    [over] = check.summary["over_relied"]
    assert over["feature"] == "a" and over["evidence_low"] == table.loc["a", "evidence_low"]
    assert any("but the label follows it on these rows: at least" in r for r in over["reasons"])
    [warning] = check.warnings
    assert warning.subject == "a" and warning.details["over_relied"] is True
    assert "1 over-relied, not a proxy (a: the label follows it on these rows)" in \
        check.summary["suspect_signals"]["confirmation"]
    assert any(line.startswith("- a is over-relied, not a proxy: ")
               for line in check.sections["Suspected proxies"])


def test_with_fewer_than_30_labelled_rows_a_candidate_is_one_the_audit_cannot_judge():
    # 25 labelled rows: enough for the evidence fit of four features, too few for the test.
    # The proxy is relied on far beyond its evidence; the audit names it as a candidate it
    # cannot judge (a warning, no failed gate), as it does on more rows with a weak test.
    import pandas as pd

    from sensaudit import audit_frame

    rng = np.random.default_rng(3)
    genuine, proxy = rng.normal(size=(25, 3)), rng.normal(size=25)
    label = genuine.sum(1) + rng.normal(scale=0.3, size=25)
    weights = torch.tensor([[1.0], [1.0], [1.0], [3.0]])
    frame = pd.DataFrame(np.column_stack([genuine, proxy]),
                         columns=["g0", "g1", "g2", "proxy"]).assign(label=label)
    result = audit_frame(lambda t: t @ weights, frame, label="label",
                         settings=AuditSettings(fail_on_suspects=True))
    check = next(c for c in result.checks if c.check == "suspects")
    assert check.summary["suspects"] == [] and not check.gates
    [unjudged] = check.summary["unjudged_candidates"]
    assert unjudged["feature"] == "proxy" and unjudged["power"] is None
    assert "relied on beyond its evidence" in unjudged["reasons"][0]
    assert unjudged["reasons"][-1] == ("only 25 labelled rows: too few to test whether the "
                                       "model does better without it (the test needs 30)")
    [warning] = check.warnings
    assert warning.subject == "proxy" and warning.details["unjudged"] is True
    assert check.summary["suspect_signals"]["confirmation"] == (
        "not run: 25 labelled rows sampled (needs 30); 1 candidate(s) it cannot judge (proxy)")
    table = check.tables["suspects.csv"].set_index("feature")
    assert bool(table.loc["proxy", "unjudged"]) and not table["suspect"].any()


def _tied_case(rows: int = 1000, seed: int = 5):
    """x2 is x1 plus a little noise (the other input predicts 96% of it); the label follows
    x1. The model is off by +1 on the data's rows and would be right off them: a term of x2
    that only rows unlike any in the data (x2 more than 1 from x1: 5 noise sigmas) switch
    on."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = x1 + 0.2 * rng.normal(size=rows)
    x = np.column_stack([x1, x2])
    y = 2.0 * x1 + rng.normal(scale=0.5, size=rows)

    def model(t: torch.Tensor) -> torch.Tensor:
        off_data = torch.clamp((t[:, 1] - t[:, 0]).abs() - 1.0, 0.0, 1.0)
        return (2.0 * t[:, 0] + 1.0 - off_data)[:, None]

    return x, y, model


def test_a_feature_the_others_predict_is_averaged_over_its_own_part():
    x, y, model = _tied_case()
    tied, predicted = own_part(x, 1)
    residual = x[:, 1] - tied
    # The fit of x2 on x1 (R^2 = 1 / 1.04), shrunk by its adjusted R^2: x2 less that part is
    # the noise, spread 0.2, not x2's spread of about 1.
    assert 0.95 < predicted < 0.97
    assert 0.18 < residual.std() < 0.22
    # Averaged over its whole values, x2 switches the off-data term on and the model looks
    # better without it: a genuine feature the test would confirm as a proxy.
    xt = torch.from_numpy(x)
    base = ((model(xt)[:, 0].numpy() - y) ** 2).mean()
    whole = ((averaged_out(model, xt, 1, x[:, 1]).numpy() - y) ** 2).mean()
    own = ((averaged_out(model, xt, 1, x[:, 1], tied=tied).numpy() - y) ** 2).mean()
    assert whole < 0.7 * base
    # Over its own part the rows stay where the data are, and the model is as it was.
    assert own == base
    harm = harm_tests(model, xt, y, ["x1", "x2"], ["x2"], level=0.05, confidence=0.95,
                      on_probability=False)["x2"]
    # Exactly 0: the averaging's rounding (1e-16, which its own spread would call significant)
    # is no effect.
    assert harm.change == 0 and not harm.confirmed and not harm.unjudged
    assert math.isclose(harm.predicted, predicted)
    assert "the other inputs do not predict (they predict 96%" in harm.over()


def test_a_feature_independent_of_the_others_is_averaged_over_its_whole_values():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(400, 5))
    tied, predicted = own_part(x, 2)
    # A chance fit on 400 rows: the adjusted R^2 leaves almost nothing (often exactly 0).
    assert predicted < 0.02 and tied.std() < 0.15
    codes = np.column_stack([x[:, :2], rng.integers(0, 4, 400).astype(float)])
    codes[:, 2] += (codes[:, 0] > 0)  # tied to x0, but codes a model may index by
    assert own_part(codes, 2)[1] == 0.0 and not own_part(codes, 2)[0].any()
