"""Audits with each attribution method: the global figures, the baseline and when the data is
read for it, the completeness check, and the per-row explanations (examples.csv, report.md).

The models are closed forms: for y = w.x + 1 every method's per-row contribution of feature j
is w_j (x_j - b_j), with b the baseline (the features' means by default).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from models import save_exported
from torch import nn

import sensaudit
from sensaudit import AuditSettings, ProxyLimit
from sensaudit.inputs import tables
from sensaudit.pipeline.baselines import FeatureSummary
from sensaudit.results.audit_result import ATTRIBUTION_COLUMNS, SENSITIVITY_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
W = [2.0, -0.5, 0.25]


class Linear(nn.Module):
    """y = w.x + 1 (float64): gradient w in every row; contribution w_j (x_j - b_j)."""

    def __init__(self, w=W):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w + 1.0


class TwoOutputs(nn.Module):
    """p = 0.1 a + b + c, q = 3 a + 0.1 b + 0.1 c: a drives q, not p."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.tensor([[0.1, 1.0, 1.0], [3.0, 0.1, 0.1]], dtype=x.dtype)
        return x @ weights.T


class Cubic(nn.Module):
    """y = sum_j x_j^3: integrated gradients c_j (x_j^3 - b_j^3) need 2 quadrature points."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x**3).sum(1)


def _frame(rows: int = 40) -> pd.DataFrame:
    generator = np.random.default_rng(4)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(rows)],
                          "a": generator.normal(3, 1, rows), "b": generator.normal(-2, 2, rows),
                          "c": generator.integers(0, 10, rows).astype(float)})
    frame["label"] = (frame["a"] > 3).astype(float)
    return frame


def _run(tmp_path: Path, model: nn.Module, audit: str = "", frame: pd.DataFrame | None = None,
         chunk_rows: int = 100_000) -> tuple[object, Path]:
    """run_audit on an exported float64 model and a CSV; returns the result and the folder."""
    frame = _frame() if frame is None else frame
    frame.to_csv(tmp_path / "data.csv", index=False)
    save_exported(model, tmp_path / "model.pt2", 3, dtype=torch.float64)
    (tmp_path / "audit.yaml").write_text(
        "model: {path: model.pt2}\n"
        f"data: {{path: data.csv, id: id, label: label, chunk_rows: {chunk_rows}}}\n"
        f"audit:\n  top_k: 3\n{audit}report: {{dir: out}}\n")
    result, _ = sensaudit.run_audit(sensaudit.load_config(tmp_path / "audit.yaml"))
    return result, tmp_path / "out"


def _contribution(frame: pd.DataFrame, baseline: np.ndarray) -> np.ndarray:
    return np.asarray(W) * (frame[["a", "b", "c"]].to_numpy() - baseline)


# --- per-row contributions in examples.csv ------------------------------------------------------


@pytest.mark.parametrize("method", ["gradient", "gradient_x_input", "integrated_gradients"])
def test_examples_csv_contributions_are_w_times_distance_from_the_mean(tmp_path, method):
    frame = _frame()
    _, out = _run(tmp_path, Linear(), f"  method: {method}\n")
    examples = pd.read_csv(out / "examples.csv")
    expected = _contribution(frame, frame[["a", "b", "c"]].mean().to_numpy())
    features = {"a": 0, "b": 1, "c": 2}
    for k in (1, 2, 3):
        column = examples[f"driver_{k}"].map(features).to_numpy()
        np.testing.assert_allclose(examples[f"contribution_{k}"],
                                   expected[np.arange(len(frame)), column], rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_array_equal(examples[f"value_{k}"],
                                      frame[["a", "b", "c"]].to_numpy()[np.arange(40), column])
    # Drivers in order of |contribution|, different from row to row.
    magnitudes = np.abs(examples[[f"contribution_{k}" for k in (1, 2, 3)]].to_numpy())
    assert (np.diff(magnitudes, axis=1) <= 0).all()
    assert examples["driver_1"].nunique() == 3
    gradient = [f"gradient_{k}" for k in (1, 2, 3)]
    assert set(gradient) <= set(examples.columns) if method == "gradient" else (
        not set(gradient) & set(examples.columns))


def test_a_mapping_baseline_sets_the_named_features_and_means_the_others(tmp_path):
    frame = _frame()
    result, out = _run(tmp_path, Linear(), "  method: integrated_gradients\n"
                                           "  baseline: {a: 0, c: 10}\n")
    baseline = np.array([0.0, frame["b"].mean(), 10.0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"]["baseline"]["kind"] == "mapping"
    assert summary["method"]["baseline"]["given"] == {"a": 0.0, "c": 10.0}
    np.testing.assert_allclose(list(summary["method"]["baseline"]["values"].values()),
                               baseline, rtol=1e-15)
    table = result.table.set_index("feature")
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "mean_abs_attribution"],
                               np.abs(_contribution(frame, baseline)).mean(0), rtol=1e-12)
    report = (out / "report.md").read_text()
    assert "baseline as given for a, c, the mean for the others" in report
    assert re.search(r"a = [\d.]+ \(baseline 0\) adds \+[\d.]+ to the score", report)
    assert re.search(r"b = -?[\d.]+ \(mean -?[\d.]+\) (adds|takes)", report)


# --- the global figures and summary.json --------------------------------------------------------


def test_attribution_methods_rank_by_mean_abs_attribution(tmp_path):
    frame = _frame()
    result, out = _run(tmp_path, Linear(), "  method: gradient_x_input\n")
    table = pd.read_csv(out / "sensitivity.csv")
    assert list(table.columns) == ATTRIBUTION_COLUMNS
    contribution = _contribution(frame, frame[["a", "b", "c"]].mean().to_numpy())
    expected = pd.DataFrame({"feature": ["a", "b", "c"],
                             "mean_attribution": contribution.mean(0),
                             "mean_abs_attribution": np.abs(contribution).mean(0),
                             "rms_attribution": np.sqrt((contribution**2).mean(0))})
    expected["share"] = expected["mean_abs_attribution"] / expected["mean_abs_attribution"].sum()
    expected = expected.sort_values("share", ascending=False, ignore_index=True)
    pd.testing.assert_frame_equal(table[expected.columns], expected, rtol=1e-7)
    assert table["rank"].tolist() == [1, 2, 3]
    assert (table["scaled_sensitivity"] == table["mean_abs_attribution"]).all()
    report = (out / "report.md").read_text()
    assert "| rank | feature | share | mean abs attribution | mean attribution | std |" in report
    assert ("- Method: `gradient_x_input`, baseline the features' means: the gradient at the "
            "row times the feature's distance from the baseline") in report


def test_gradient_keeps_its_columns_and_says_what_it_measures(tmp_path):
    _, out = _run(tmp_path, Linear())
    assert list(pd.read_csv(out / "sensitivity.csv").columns) == SENSITIVITY_COLUMNS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"]["name"] == "gradient" and summary["method"]["per_unit"] is True
    assert summary["method"]["parameters"] == {} and "completeness" not in summary
    assert "- Method: `gradient`, baseline the features' means: how much each output " in (
        out / "report.md").read_text()


@pytest.mark.parametrize("method, audit, parameters", [
    ("smoothgrad", "  samples: 9\n  noise: 0.5\n  seed: 3\n",
     {"samples": 9, "noise": 0.5, "seed": 3}),
    ("integrated_gradients", "  steps: 7\n", {"steps": 7, "rule": "gauss-legendre"}),
])
def test_summary_records_the_method_and_its_parameters(tmp_path, method, audit, parameters):
    _, out = _run(tmp_path, Linear(), f"  method: {method}\n  baseline: median\n{audit}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"]["name"] == method
    assert summary["method"]["parameters"] == parameters
    assert summary["method"]["baseline"]["kind"] == "median"
    assert summary["method"]["baseline"]["exact"] is True
    medians = _frame()[["a", "b", "c"]].median().to_numpy()
    np.testing.assert_allclose(list(summary["method"]["baseline"]["values"].values()), medians,
                               rtol=1e-15)
    assert f"- Method: `{method}` (" in (out / "report.md").read_text()


def test_integrated_gradients_report_their_completeness_gap(tmp_path):
    _, out = _run(tmp_path, Linear(), "  method: integrated_gradients\n")
    summary = json.loads((out / "summary.json").read_text())
    gap = summary["completeness"]
    assert gap["max_relative_gap"] == 0.01
    assert gap["outputs"]["score"]["max_abs_gap"] < 1e-12
    assert gap["outputs"]["score"]["mean_abs_score_change"] > 0.1
    assert [w for w in summary["warnings"] if w["feature"] == "attributions"] == []
    assert ("- The integrated_gradients attributions add up to the score's change from the "
            "baseline to a mean absolute gap of") in (out / "report.md").read_text()


def test_a_large_completeness_gap_is_a_warning_with_a_finding():
    frame = _frame()
    one = sensaudit.audit_frame(Cubic(), frame, features=["a", "b", "c"],
                                settings=AuditSettings(method="integrated_gradients",
                                                       method_options={"steps": 1}))
    [warning] = [w for w in one.gates.warnings if w.check == "completeness"]
    assert (warning.check, warning.output) == ("completeness", "score")
    assert warning.details["relative_gap"] > 0.01
    assert one.passed  # a warning, not a failed gate
    [finding] = [f for f in one.findings if "do not add up" in f]
    assert finding.endswith("The path integral is not converged, so the attributions miss part "
                            "of the score; raise audit.steps (now 1).")
    # Two points integrate the cubic's quadratic gradient exactly: no warning.
    two = sensaudit.audit_frame(Cubic(), frame, features=["a", "b", "c"],
                                settings=AuditSettings(method="integrated_gradients",
                                                       method_options={"steps": 2}))
    assert [w for w in two.gates.warnings if w.check == "completeness"] == []
    # A stricter limit is an option of the check.
    strict = AuditSettings(method="integrated_gradients", method_options={"steps": 1},
                           checks={"completeness": {"max_relative_gap": 1.0}})
    lenient = sensaudit.audit_frame(Cubic(), frame, features=["a", "b", "c"], settings=strict)
    assert [w for w in lenient.gates.warnings if w.check == "completeness"] == []


# --- when the data is read for the baseline -------------------------------------------------


@pytest.mark.parametrize("settings, reads", [
    (AuditSettings(), 1),  # gradient: the means come from the read pass itself
    (AuditSettings(baseline="median"), 1),  # the median sample too
    (AuditSettings(method="gradient_x_input", baseline="zero"), 1),
    (AuditSettings(method="integrated_gradients", baseline={"a": 0, "b": 0, "c": 1}), 1),
    (AuditSettings(method="gradient_x_input"), 2),  # the mean before the first row
    (AuditSettings(method="integrated_gradients", baseline={"a": 0}), 2),  # b, c: means
    (AuditSettings(method="smoothgrad", baseline="zero"), 2),  # the noise scale: the stds
])
def test_the_data_is_read_twice_only_for_statistics_needed_up_front(monkeypatch, settings,
                                                                    reads):
    calls = []
    original = tables.iter_frame_chunks

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(tables, "iter_frame_chunks", counting)
    result = sensaudit.audit_frame(Linear(), _frame(), features=["a", "b", "c"],
                                   settings=settings)
    assert len(calls) == reads
    assert result.rows == 40


@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "integrated_gradients"])
def test_the_median_baseline_is_the_exact_median(method):
    frame = _frame(41)
    result = sensaudit.audit_frame(Linear(), frame, features=["a", "b", "c"],
                                   settings=AuditSettings(method=method, baseline="median"))
    got = list(result.method_details["baseline"]["values"].values())
    assert got == frame[["a", "b", "c"]].median().tolist()


def test_the_median_of_the_sample_data_is_exact_and_its_sample_close():
    data = pd.read_csv(ROOT / "sensaudit/sample/sample_data/ad_copy_eval.csv")
    features = [c for c in data.columns if c not in ("ad_id", "quality")]
    x = torch.tensor(data[features].to_numpy())
    rows = np.arange(1, len(data) + 1)
    summary = FeatureSummary(len(features), median=True)
    for part in np.array_split(np.arange(len(data)), 7):
        summary.update(rows[part], x[part])
    reference = summary.reference()
    assert reference.median_exact
    assert reference.median.tolist() == data[features].median().tolist()
    # With fewer rows kept than read, the median of a uniform sample of 256 rows: its rank in
    # the whole column lies near the middle (the sample median's rank has sd 0.5 / sqrt(256)).
    sampled = FeatureSummary(len(features), median=True, keep=256)
    sampled.update(rows, x)
    assert sampled.sample is not None and len(sampled.sample.rows) == 256
    reference = sampled.reference()
    assert not reference.median_exact
    values = data[features].to_numpy()
    for j, median in enumerate(reference.median.tolist()):
        below = (values[:, j] < median).mean()
        at_most = (values[:, j] <= median).mean()
        assert below - 0.125 <= 0.5 <= at_most + 0.125, features[j]


def test_smoothgrad_audits_do_not_depend_on_chunking():
    frame = _frame()
    settings = AuditSettings(method="smoothgrad", method_options={"samples": 5, "noise": 0.5})
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    whole = sensaudit.audit_frame(model, frame, features=["a", "b", "c"], settings=settings)
    chunked = sensaudit.audit_frame(model, frame, features=["a", "b", "c"], settings=settings,
                                    chunk_rows=7)
    pd.testing.assert_frame_equal(whole.table, chunked.table, rtol=1e-12)
    assert [(e.id, e.reason, [d.feature for d in e.drivers]) for e in whole.examples] == [
        (e.id, e.reason, [d.feature for d in e.drivers]) for e in chunked.examples]
    np.testing.assert_allclose([d.contribution for e in whole.examples for d in e.drivers],
                               [d.contribution for e in chunked.examples for d in e.drivers],
                               rtol=1e-12)


# --- report.md: rows that explain something ------------------------------------------------------


def test_report_shows_proxy_rows_and_misscored_rows_in_words(tmp_path):
    frame = _frame()
    _, out = _run(tmp_path, Linear(), "  proxies: [{feature: a, max_share: 0.9}]\n"
                                      "  examples_in_report: 4\n")
    report = (out / "report.md").read_text()
    sections = re.findall(r"^### (.+)$", report, flags=re.M)
    assert sections == ["Rows where the declared proxies move the score most",
                        "Rows scored furthest from their label"]
    proxy_rows = re.findall(r"^- `(r\d+)`: score", report.split("### Rows scored")[0], re.M)
    mean = frame[["a", "b", "c"]].mean().to_numpy()
    proxy = np.abs(_contribution(frame, mean)[:, 0])
    assert proxy_rows == frame["id"][np.argsort(-proxy, kind="stable")[:4]].tolist()
    first = frame.set_index("id").loc[proxy_rows[0]]
    words = (f"a = {first['a']:.4g} (mean {mean[0]:.4g}) "
             + (f"adds {W[0] * (first['a'] - mean[0]):+.2g} to the score"
                if first["a"] > mean[0] else
                f"takes {-W[0] * (first['a'] - mean[0]):.2g} off the score"))
    assert f"- `{proxy_rows[0]}`: score " in report and words in report
    scores = frame[["a", "b", "c"]].to_numpy() @ np.asarray(W) + 1
    # A 0/1 label against scores outside [0, 1]: the scores are read as logits and the rows
    # furthest from their label are those furthest on the probability (issue 20).
    probability = 1 / (1 + np.exp(-scores))
    off = np.abs(probability - frame["label"].to_numpy())
    misscored = re.findall(r"^- `(r\d+)`: score", report.split("### Rows scored")[1], re.M)
    assert misscored == frame["id"][np.argsort(-off, kind="stable")[:4]].tolist()
    top = frame["id"].tolist().index(misscored[0])
    assert (f"label {frame['label'][top]:g} (probability {probability[top]:.3g}, off by "
            f"{off[top]:.3g})") in report


def test_a_proxy_outside_the_top_drivers_is_still_shown_with_its_contribution():
    frame = _frame()
    result = sensaudit.audit_frame(Linear(), frame, id="id", features=["a", "b", "c"],
                                   proxies=[ProxyLimit("c", max_share=0.9)],
                                   settings=AuditSettings(top_k=1, examples_in_report=3))
    mean = frame[["a", "b", "c"]].mean().to_numpy()
    contribution = _contribution(frame, mean)
    for example in result.examples:
        row = frame["id"].tolist().index(example.id)
        [driver] = example.drivers
        if driver.feature == "c":
            assert example.proxies == []
        else:
            [proxy] = example.proxies
            assert proxy.feature == "c" and proxy.value == frame["c"][row]
            assert proxy.baseline == pytest.approx(mean[2], rel=1e-15)
            assert proxy.attribution == pytest.approx(W[2], rel=1e-15)
            assert proxy.contribution == pytest.approx(contribution[row, 2], rel=1e-12)
    assert any(e.proxies for e in result.examples)
    from sensaudit.reports.markdown_report import audit_markdown

    assert re.search(r"; declared proxy: c = \d+ \(mean [\d.]+\) (adds|takes) ",
                     audit_markdown(result))


def test_without_proxies_or_labels_the_strongest_rows_are_shown():
    frame = _frame().drop(columns=["label"])
    result = sensaudit.audit_frame(Linear(), frame, id="id",
                                   settings=AuditSettings(examples_in_report=3))
    assert [e.reason for e in result.examples] == ["strongest"] * 3
    from sensaudit.reports.markdown_report import audit_markdown

    report = audit_markdown(result)
    assert "### Rows where one feature moves the score most" in report
    assert "Rows scored furthest" not in report


def test_the_flagged_output_is_shown_first():
    frame = _frame()
    result = sensaudit.audit_frame(TwoOutputs(), frame, id="id", label="label",
                                   features=["a", "b", "c"],
                                   proxies=[ProxyLimit("a", max_share=0.5)],
                                   settings=AuditSettings(examples_in_report=2))
    assert [(g.subject, g.output) for g in result.gates.flags] == [("a", "output_1")]
    assert [(e.reason, e.output) for e in result.examples] == [
        ("proxies", "output_1"), ("proxies", "output_1"), ("proxies", "output_0"),
        ("proxies", "output_0"), ("misscored", "output_1"), ("misscored", "output_1"),
        ("misscored", "output_0"), ("misscored", "output_0")]


# --- compare with an attribution method --------------------------------------------------------


def test_compare_uses_the_configured_method(tmp_path):
    frame = _frame()
    frame.to_csv(tmp_path / "data.csv", index=False)
    save_exported(Linear(), tmp_path / "old.pt2", 3, dtype=torch.float64)
    save_exported(Linear([0.5, -0.5, 0.25]), tmp_path / "new.pt2", 3, dtype=torch.float64)
    (tmp_path / "c.yaml").write_text("data: {path: data.csv, id: id, label: label}\n"
                                     "audit: {method: integrated_gradients, steps: 3}\n"
                                     "compare: {bootstrap_samples: 20}\nreport: {dir: out}\n")
    config = sensaudit.load_config(tmp_path / "c.yaml")
    result = sensaudit.compare_models(config, tmp_path / "old.pt2", tmp_path / "new.pt2")
    mean = frame[["a", "b", "c"]].mean().to_numpy()
    for weights, audit in ((W, result.old), ([0.5, -0.5, 0.25], result.new)):
        magnitude = np.abs(np.asarray(weights) * (frame[["a", "b", "c"]].to_numpy() - mean))
        table = audit.table.set_index("feature").loc[["a", "b", "c"]]
        np.testing.assert_allclose(table["share"], magnitude.mean(0) / magnitude.mean(0).sum(),
                                   rtol=1e-12)
    assert result.new.method == "integrated_gradients"
