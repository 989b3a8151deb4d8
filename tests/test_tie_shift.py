"""The training-tie test (checks/tie_shift.py): the label's correlation with each feature on the
training rows (data.train) against the audited rows'. Its accumulator against numpy, its
statistic against Fisher's formula, its false-alarm rate on two samples of one population, its
power on a tie that held only in training, and the whole audit with and without the training
rows: config, messages, reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_suspects import FEATURES, REAL, extract, suspects_of, train
from typer.testing import CliRunner

from sensaudit import AuditSettings, audit, audit_frame, load_config
from sensaudit.checks.tie_shift import tie_shifts
from sensaudit.cli.app import app
from sensaudit.stats.label_correlation import (
    LabelTies,
    LevelSums,
    coding_tie,
    held_out_coding_tie,
)
from sensaudit.stats.normal import normal_quantile


def correlations(x: np.ndarray, y: np.ndarray, parts: int = 1) -> LabelTies:
    found = LabelTies(x.shape[1])
    for index in np.array_split(np.arange(len(y)), parts):
        part = LabelTies(x.shape[1])
        part.update(x[index], y[index])
        found.merge(part)
    return found


@pytest.mark.parametrize("parts", [1, 3, 7])
def test_the_correlations_match_numpy_whatever_the_partition(parts):
    rng = np.random.default_rng(parts)
    x = rng.normal(size=(500, 3)) * [1.0, 1e-3, 50.0] + [0.0, 1e6, -3.0]  # far from zero
    y = x[:, 0] - 0.002 * x[:, 2] + rng.normal(size=500)
    found = correlations(x, y, parts)
    expected = [np.corrcoef(x[:, j], y)[0, 1] for j in range(3)]
    assert found.rows == 500
    # Column 1's values are stored to about 1e-10 around 1e6 on a spread of 1e-3: 1e-7 of it,
    # the float64 limit any method shares; the others agree to rounding.
    np.testing.assert_allclose(found.pearson.correlation(), expected, atol=1e-7)
    np.testing.assert_allclose(found.pearson.correlation()[[0, 2]], np.array(expected)[[0, 2]],
                               rtol=1e-12)


def test_rows_with_a_non_finite_value_are_left_out_and_a_constant_column_has_no_tie():
    x = np.array([[1.0, 5.0], [2.0, 5.0], [np.nan, 5.0], [4.0, 5.0], [3.0, 5.0]])
    y = np.array([1.0, 2.0, 3.0, np.inf, 3.5])
    found = correlations(x, y)
    assert found.rows == 3  # rows 3 and 4 are out
    assert found.pearson.correlation()[0] == pytest.approx(
        np.corrcoef([1, 2, 3], [1, 2, 3.5])[0, 1])
    assert found.pearson.correlation()[1] == 0.0


def _held_out_directly(x: np.ndarray, y: np.ndarray) -> float:
    """Each row's level mean with its own label left out (a one-row level: every other row's
    mean), correlated with the label, row by row."""
    g = np.empty(len(y))
    for i in range(len(y)):
        same = (x == x[i]) & (np.arange(len(y)) != i)
        g[i] = y[same].mean() if same.any() else np.delete(y, i).mean()
    return float(np.corrcoef(g, y)[0, 1])


def test_the_coded_tie_matches_a_row_by_row_computation_whatever_the_partition():
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 5, size=(300, 1)).astype(float)
    codes[7] = 9.0  # a level of one row
    y = 150 + 3 * (codes[:, 0] == 2) - 2 * (codes[:, 0] == 4) + rng.normal(size=300)
    audited = rng.integers(0, 6, size=(120, 1)).astype(float)  # 5 was never seen in training
    y_audited = 150 + 3 * (audited[:, 0] == 2) + rng.normal(size=120)
    merged, whole, seen = LevelSums(1), LevelSums(1), LevelSums(1)
    whole.update(codes, y)
    for index in np.array_split(rng.permutation(300), 5):
        part = LevelSums(1)
        part.update(codes[index], y[index])
        merged.merge(part)
    seen.update(audited, y_audited)
    for sums in (whole, merged):
        coding = sums.coded(0)
        assert coding is not None and len(coding) == 6
        assert held_out_coding_tie(coding) == pytest.approx(_held_out_directly(codes[:, 0], y),
                                                            rel=1e-9)
        means = {v: y[codes[:, 0] == v].mean() for v in np.unique(codes)}
        g = np.array([means.get(v, y.mean()) for v in audited[:, 0]])
        assert coding_tie(coding, seen.coded(0)) == pytest.approx(
            np.corrcoef(g, y_audited)[0, 1], rel=1e-9)
    # More than 16 values: not codes; two values: a line, Pearson's r is their tie.
    many, two = LevelSums(1), LevelSums(1)
    many.update(np.arange(40.0)[:, None], np.arange(40.0))
    two.update(np.array([[0.0], [1.0], [0.0]]), np.array([1.0, 2.0, 3.0]))
    assert many.coded(0) is None and two.coded(0) is None


def test_codes_in_an_order_that_is_not_the_labels_are_read_as_codes():
    """4 codes, the label's quartile under a shuffled coding, in training; random after:
    Pearson's r sees little of the training tie, the coded tie sees it and its fall."""
    rng = np.random.default_rng(2)
    y_t, y_a = rng.normal(size=300), rng.normal(size=300)
    shuffled = np.array([2.0, 0.0, 3.0, 1.0])
    x_t = shuffled[np.digitize(y_t, np.quantile(y_t, [0.25, 0.5, 0.75]))][:, None]
    x_a = rng.integers(0, 4, size=(300, 1)).astype(float)
    found = tie_shifts(correlations(x_t, y_t), correlations(x_a, y_a), ["code"], ["code"],
                       0.001)["code"]
    assert abs(np.corrcoef(x_t[:, 0], y_t)[0, 1]) < 0.5
    assert found.levels == 4 and found.train > 0.9 and abs(found.audit) < 0.2 and found.fell
    assert "read as 4 codes" in found.reason()


def test_the_statistic_is_fishers_z_signed_by_the_training_tie():
    rng = np.random.default_rng(0)
    y_t, y_a = rng.normal(size=400), rng.normal(size=90)
    # Feature a: tied +0.8 in training, none on the audited rows; b: tied -0.8, then none;
    # c: the same tie in both.
    x_t = np.column_stack([0.8 * y_t + 0.6 * rng.normal(size=400),
                           -0.8 * y_t + 0.6 * rng.normal(size=400), y_t + rng.normal(size=400)])
    x_a = np.column_stack([rng.normal(size=90), rng.normal(size=90), y_a + rng.normal(size=90)])
    train_ties, audit_ties = correlations(x_t, y_t), correlations(x_a, y_a)
    found = tie_shifts(train_ties, audit_ties, ["a", "b", "c"], ["a", "b", "c"], 0.001)
    spread = math.sqrt(1 / 397 + 1 / 87)
    for j, name in enumerate("abc"):
        r_t, r_a = np.corrcoef(x_t[:, j], y_t)[0, 1], np.corrcoef(x_a[:, j], y_a)[0, 1]
        expected = np.sign(r_t) * (np.arctanh(r_t) - np.arctanh(r_a)) / spread
        assert found[name].z == pytest.approx(expected, rel=1e-9)
        assert (found[name].train, found[name].audit) == pytest.approx((r_t, r_a), rel=1e-9)
    assert found["a"].fell and found["b"].fell and not found["c"].fell
    # Bonferroni over the three tested: the critical value of 0.001 / 3.
    critical = normal_quantile(1 - 0.001 / 3)
    assert all(t.fell == (t.z > critical) for t in found.values())
    assert tie_shifts(train_ties, correlations(x_a[:3], y_a[:3]), ["a", "b", "c"], ["a"],
                      0.001) == {}  # 3 audited rows: too few for Fisher's z


def _sample(rng: np.random.Generator, rows: int, tie: float) -> tuple[np.ndarray, np.ndarray]:
    y = rng.normal(size=rows)
    return (tie * y + math.sqrt(1 - tie**2) * rng.normal(size=rows))[:, None], y


def test_two_samples_of_one_population_fall_at_about_the_level():
    """The false-alarm rate: 1,000 pairs of samples with the same tie (0.5), 300 training
    rows and 100 audited, at level 0.05. The count is binomial(1000, <= 0.05): at most 70 in
    all but 0.2% of runs (a rate far over the level would exceed it)."""
    rng = np.random.default_rng(11)
    fell = 0
    for _ in range(1000):
        found = tie_shifts(correlations(*_sample(rng, 300, 0.5)),
                           correlations(*_sample(rng, 100, 0.5)), ["f"], ["f"], 0.05)
        fell += found["f"].fell
    assert 25 <= fell <= 70


def test_a_tie_that_held_in_training_only_is_found_on_89_audited_rows():
    """Power at the default level (0.001), on the discovery benchmark's smallest audit (wine,
    89 rows): a feature tied 0.6 to the label in 89 training rows and not at all after."""
    rng = np.random.default_rng(5)
    found = [tie_shifts(correlations(*_sample(rng, 89, 0.6)),
                        correlations(*_sample(rng, 89, 0.0)), ["f"], ["f"], 0.001)["f"].fell
             for _ in range(200)]
    assert np.mean(found) >= 0.8


# --- the whole audit ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def leaky():
    """A scorer trained where the nuisance leaks the label, a small audit (90 rows) where it
    does not, and the training rows."""
    rng = np.random.default_rng(0)
    trained_on = extract(rng, 2000, leak=1.5, binary=True)
    return train(trained_on, "mlp", 0, True), extract(rng, 90, leak=0.0, binary=True), trained_on


def test_the_training_rows_find_a_proxy_the_audited_rows_alone_cannot(leaky):
    model, audited, trained_on = leaky
    alone = suspects_of(audit_frame(model, audited, label="y"))[1]
    assert alone["suspects"] == []
    assert alone["suspect_signals"]["training_tie"] == (
        "not run: no training rows (data.train: the rows the model was trained on)")
    table, summary = suspects_of(audit_frame(model, audited, label="y", train=trained_on))
    assert [s["feature"] for s in summary["suspects"]] == ["nuisance"]
    nuisance = table.loc["nuisance"]
    assert nuisance["tie_fell"] and nuisance["train_tie"] > 0.7 and abs(nuisance["audit_tie"]) < 0.3
    assert nuisance["train_tie"] == pytest.approx(
        np.corrcoef(trained_on["nuisance"], trained_on["y"])[0, 1], rel=1e-9)
    assert nuisance["audit_tie"] == pytest.approx(
        np.corrcoef(audited["nuisance"], audited["y"])[0, 1], rel=1e-9)
    reasons = summary["suspects"][0]["reasons"]
    assert reasons[-1].startswith("its tie to the label did not carry over from training: "
                                  f"correlation with the label {nuisance['train_tie']:+.2f} on "
                                  "the 2,000 training rows (data.train)")
    assert summary["suspects"][0]["tie_z"] == pytest.approx(nuisance["tie_z"])
    assert summary["suspect_signals"]["training_tie"].startswith(
        "ran on 2,000 training and 90 audited rows: 1 of ")
    assert not table.loc[REAL, "suspect"].any()


def test_a_model_trained_without_the_leak_has_no_suspect_with_its_training_rows():
    rng = np.random.default_rng(7)
    trained_on = extract(rng, 2000, leak=0.0, binary=False)
    model = train(trained_on, "mlp", 7, False)
    table, summary = suspects_of(audit_frame(model, extract(rng, 300, 0.0, False), label="y",
                                             train=trained_on))
    assert summary["suspects"] == [] and not table["tie_fell"].any()


class Overweighted(torch.nn.Module):
    """The label's own linear score with r2's weight five times too large: a genuine feature
    over-fit, whose tie to the label is the same in training and after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] * 1.2 + x[:, 1] * 2.0 + x[:, 2] * 1.5


def test_an_over_fit_genuine_feature_keeps_its_tie_and_is_not_a_proxy():
    rng = np.random.default_rng(3)
    trained_on, audited = extract(rng, 2000, 0.0, False), extract(rng, 400, 0.0, False)
    table, summary = suspects_of(audit_frame(Overweighted(), audited, label="y",
                                             train=trained_on))
    r2 = table.loc["r2"]
    assert r2["reliance_gap"] > 0.2 and np.isfinite(r2["tie_z"]) and not r2["tie_fell"]
    assert "r2" not in [s["feature"] for s in summary["suspects"]]


class Leaning(torch.nn.Module):
    """2 b - a + 0.5 c, where the label is a + 0.5 c + noise and b is a plus noise: the model
    leans on b's noise, and does better without it, though the label follows b (through a) in
    training and on the audited rows alike."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x[:, 1] - x[:, 0] + 0.5 * x[:, 2]


def _leaning_rows(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    a, c = rng.normal(size=rows), rng.normal(size=rows)
    return pd.DataFrame({"a": a, "b": a + 0.3 * rng.normal(size=rows), "c": c,
                         "y": a + 0.5 * c + 0.5 * rng.normal(size=rows)})


def test_a_confirmed_feature_whose_tie_held_is_over_relied_not_a_proxy():
    """The audited rows alone flag b (relied on beyond the evidence the additive fit gives it
    beside a, and the model is better without it); the training rows show its tie to the label
    held (about +0.78 there and here), so it is over-relied."""
    rng = np.random.default_rng(1)
    trained_on, audited = _leaning_rows(rng, 2000), _leaning_rows(rng, 600)
    alone = suspects_of(audit_frame(Leaning(), audited, label="y"))[1]
    assert [s["feature"] for s in alone["suspects"]] == ["b"]
    table, summary = suspects_of(audit_frame(Leaning(), audited, label="y", train=trained_on))
    b = table.loc["b"]
    assert b["confirmed"] and not b["tie_fell"] and b["over_relied"] and not b["suspect"]
    assert summary["suspects"] == [] and [s["feature"] for s in summary["over_relied"]] == ["b"]
    assert summary["over_relied"][0]["reasons"][-1].startswith(
        f"but its tie to the label held from training: correlation with the label "
        f"{b['train_tie']:+.2f} on the 2,000 training rows (data.train)")
    assert summary["suspect_signals"]["training_tie"].endswith(
        "the model does better without b, but its tie did not fall: over-relied")


def test_by_default_a_fallen_tie_fails_the_audit_and_the_audited_rows_alone_warn():
    """audit.fail_on_suspects unset: a suspect whose training tie fell is a failed gate; the
    same suspect found from the audited rows alone is a warning (that path flagged genuine
    features on the benchmark, the tie's did not: docs/checks/suspects.md). true and false
    apply to every suspect."""
    rng = np.random.default_rng(0)
    trained_on = extract(rng, 2000, leak=1.5, binary=True)
    model = train(trained_on, "linear", 0, True)
    audited = extract(rng, 800, leak=0.0, binary=True)
    alone = audit_frame(model, audited, label="y")
    assert alone.passed and [w.subject for w in alone.gates.warnings] == ["nuisance"]
    with_rows = audit_frame(model, audited, label="y", train=trained_on)
    assert not with_rows.passed and [g.subject for g in with_rows.gates.flags] == ["nuisance"]
    never = audit_frame(model, audited, label="y", train=trained_on,
                        settings=AuditSettings(fail_on_suspects=False))
    assert never.passed and [w.subject for w in never.gates.warnings] == ["nuisance"]
    always = audit_frame(model, audited, label="y", settings=AuditSettings(fail_on_suspects=True))
    assert not always.passed and [g.subject for g in always.gates.flags] == ["nuisance"]


def test_on_25_rows_the_tie_judges_what_the_loss_test_cannot():
    """On 25 rows the audited rows alone do not flag the leak (its evidence interval is wide),
    and the loss-change test cannot run (under 30 rows), so b is a candidate the audit cannot
    judge. The tie judges both: the leak is a suspect (its tie fell), b is cleared (its tie
    held: a proxy's would have fallen)."""
    rng = np.random.default_rng(0)
    trained_on = extract(rng, 2000, leak=1.5, binary=True)
    model = train(trained_on, "linear", 0, True)
    audited = extract(rng, 25, leak=0.0, binary=True)
    assert suspects_of(audit_frame(model, audited, label="y"))[1]["suspects"] == []
    summary = suspects_of(audit_frame(model, audited, label="y", train=trained_on))[1]
    assert [s["feature"] for s in summary["suspects"]] == ["nuisance"]
    rng = np.random.default_rng(1)
    leaning_train, leaning_audit = _leaning_rows(rng, 2000), _leaning_rows(rng, 25)
    alone = suspects_of(audit_frame(Leaning(), leaning_audit, label="y"))[1]
    assert [s["feature"] for s in alone["unjudged_candidates"]] == ["b"]
    table, summary = suspects_of(audit_frame(Leaning(), leaning_audit, label="y",
                                             train=leaning_train))
    assert summary["unjudged_candidates"] == [] and summary["suspects"] == []
    assert not table.loc["b", "unjudged"] and not table.loc["b", "tie_fell"]
    assert summary["suspect_signals"]["training_tie"].endswith(
        "b, which the loss-change test could not judge, kept its tie: cleared")


class NoisyLinear(torch.nn.Module):
    """The label's own linear score (r1, r2, r3) plus c1, a noise column the label never
    followed, in training or after: an over-fit model, not one leaning on a proxy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] * 1.2 + x[:, 1] * 0.4 + x[:, 2] * 1.5 + x[:, 4] * 0.6


def test_reliance_on_noise_the_label_never_followed_is_over_fit_not_a_proxy():
    rng = np.random.default_rng(5)
    trained_on, audited = extract(rng, 2000, 0.0, False), extract(rng, 600, 0.0, False)
    alone = suspects_of(audit_frame(NoisyLinear(), audited, label="y"))[1]
    assert "c1" in [s["feature"] for s in alone["suspects"]]
    table, summary = suspects_of(audit_frame(NoisyLinear(), audited, label="y",
                                             train=trained_on))
    c1 = table.loc["c1"]
    assert c1["confirmed"] and not c1["tie_fell"] and c1["over_relied"]
    assert summary["suspects"] == []
    reason = next(s for s in summary["over_relied"] if s["feature"] == "c1")["reasons"][-1]
    assert reason.startswith("but its tie to the label did not fall from training beyond "
                             "chance: correlation with the label ")
    assert "so it is named over-relied rather than a proxy" in reason


# --- config, messages, reports -----------------------------------------------------------------


def _files(tmp_path, model, audited: pd.DataFrame, trained_on: pd.DataFrame,
           data: dict) -> object:
    audited.to_csv(tmp_path / "audit.csv", index=False)
    trained_on.to_csv(tmp_path / "train.csv", index=False)
    program = torch.export.export(model, (torch.zeros(4, 6, dtype=torch.float64),),
                                  dynamic_shapes=({0: torch.export.Dim("rows")},))
    torch.export.save(program, str(tmp_path / "model.pt2"))
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": "model.pt2"},
                                    "data": {"path": "audit.csv", **data},
                                    "audit": {"fail_on_suspects": True},
                                    "report": {"dir": "out"}}))
    return path


def test_data_train_through_the_cli(tmp_path, leaky):
    model, audited, trained_on = leaky
    path = _files(tmp_path, model, audited, trained_on, {"label": "y", "train": "train.csv"})
    done = CliRunner().invoke(app, ["run", str(path)])
    assert done.exit_code == 1, done.output
    assert "its tie to the label did not carry over from training" in done.output
    csv = pd.read_csv(tmp_path / "out" / "suspects.csv").set_index("feature")
    assert {"train_tie", "audit_tie", "tie_z", "tie_p", "tie_fell"} <= set(csv.columns)
    assert csv.loc["nuisance", "suspect"] and csv.loc["nuisance", "tie_fell"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["suspects"][0]["train_tie"] == pytest.approx(csv.loc["nuisance", "train_tie"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "- training tie: ran on 2,000 training and 90 audited rows" in report


def test_reading_the_training_rows_is_reported_as_progress(tmp_path, leaky):
    model, audited, trained_on = leaky
    path = _files(tmp_path, model, audited, trained_on, {"label": "y", "train": "train.csv",
                                                         "chunk_rows": 700})
    seen: list[tuple[str, int, int | None]] = []
    audit(load_config(path), progress=lambda *update: seen.append(update))
    training = [done for stage, done, _ in seen if stage == "training"]
    assert training == [700, 1400, 2000]  # then the audit's own stages
    assert seen.index(("training", 2000, None)) < min(
        i for i, (stage, _, _) in enumerate(seen) if stage != "training")


@pytest.mark.parametrize("data, expected", [
    ({"train": "train.csv"}, "{config}: data.train needs data.label: the training rows are read "
                             "for the label's tie to each feature"),
    ({"label": "y", "train": "missing.csv"}, "{dir}/missing.csv"),
    ({"label": "y", "train": "narrow.csv"},
     "{dir}/narrow.csv: column 'c2' named by the audited features[5] is not in the data"),
])
def test_bad_training_rows_exit_2_naming_the_file(tmp_path, leaky, data, expected):
    model, audited, trained_on = leaky
    trained_on.drop(columns=["c2"]).to_csv(tmp_path / "narrow.csv", index=False)
    path = _files(tmp_path, model, audited, trained_on, data)
    done = CliRunner().invoke(app, ["run", str(path)])
    assert done.exit_code == 2, done.output
    assert expected.format(config=path, dir=tmp_path) in done.output.replace("\n", "")
    assert "Traceback" not in done.output and not (tmp_path / "out").exists()


def test_training_rows_in_memory_are_checked_as_a_file_is(leaky):
    model, audited, trained_on = leaky
    with pytest.raises(Exception, match=r"<training DataFrame>: column 'y' named by data.label "
                                        r"is not in the data"):
        audit_frame(model, audited, label="y", train=trained_on.drop(columns=["y"]))
    with pytest.raises(Exception, match=r"data.train needs data.label"):
        audit_frame(model, audited, train=trained_on)


def test_the_report_folder_never_replaces_the_training_rows(tmp_path, leaky):
    model, audited, trained_on = leaky
    path = _files(tmp_path, model, audited, trained_on, {"label": "y", "train": "out/train.csv"})
    (tmp_path / "out").mkdir()
    trained_on.to_csv(tmp_path / "out" / "train.csv", index=False)
    before = (tmp_path / "out" / "train.csv").read_bytes()
    CliRunner().invoke(app, ["run", str(path)])
    assert (tmp_path / "out" / "train.csv").read_bytes() == before
    assert len(FEATURES) == 6
