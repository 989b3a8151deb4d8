"""audit.robustness: the adversarial shift, against closed forms.

For a linear scorer y = w.x the largest change within |delta_j| <= eps std_j is reached at
delta_j = eps std_j sign(w_j): every row's shift, up and down, is eps x sum_j |w_j| std_j, over
the mutable features only. With bounds, feature j can move only as far as its observed range
allows: up_r = sum_j |w_j| min(eps std_j, room_rj), room the distance to the max (w_j > 0) or
to the min (w_j < 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_checks import LinearScorer, check_result, frame, run_cli, write_setup

from sensaudit import AuditSettings, audit_frame
from sensaudit.core.perturb import adversarial_shift
from sensaudit.settings.checks import RobustnessSettings

W = [1.5, -0.5, 4.0]


def _robustness(data: pd.DataFrame, model, **options) -> tuple[pd.DataFrame, list]:
    threshold = options.pop("threshold", None)
    settings = AuditSettings(robustness=RobustnessSettings(**options), threshold=threshold)
    result = audit_frame(model, data, settings=settings, chunk_rows=17)  # several chunks
    check = check_result(result, "robustness")
    return check.tables["robustness.csv"], check.summary["robustness"]


@pytest.mark.parametrize("steps", [1, 10])
def test_linear_shift_is_epsilon_times_the_weighted_stds(steps):
    data = frame()
    table, summary = _robustness(data, LinearScorer(W), epsilon=0.1, steps=steps,
                                 bounds="none")
    expected = 0.1 * float((np.abs(W) * data.std(ddof=1).to_numpy()).sum())
    assert len(table) == len(data)
    np.testing.assert_allclose(table["shift_up"], expected, rtol=1e-12)
    np.testing.assert_allclose(table["shift_down"], expected, rtol=1e-12)
    np.testing.assert_allclose(table["shift"], expected, rtol=1e-12)
    (record,) = summary
    assert record["output"] == "score" and record["epsilon"] == 0.1
    np.testing.assert_allclose([record["mean_shift"], record["p95_shift"],
                                record["max_shift"]], expected, rtol=1e-12)
    assert record["limit"] is None and record["passed"] is True
    moved = {d["feature"]: d for d in record["features_moved"]}
    # Each feature's part of the attack moves the score by eps |w_j| std_j on its own.
    for j, name in enumerate("abc"):
        np.testing.assert_allclose(moved[name]["mean_shift_alone"],
                                   0.1 * abs(W[j]) * data[name].std(), rtol=1e-12)
        assert moved[name]["mean_abs_change_std"] == pytest.approx(0.1, rel=1e-12)
        assert moved[name]["rows_moved_rate"] == 1.0


def test_an_immutable_feature_is_left_out_of_the_shift():
    data = frame()
    table, summary = _robustness(data, LinearScorer(W), epsilon=0.2, bounds="none",
                                 immutable=("c",))
    std = data.std(ddof=1)
    expected = 0.2 * (abs(W[0]) * std["a"] + abs(W[1]) * std["b"])
    np.testing.assert_allclose(table["shift"], expected, rtol=1e-12)
    moved = {d["feature"]: d for d in summary[0]["features_moved"]}
    assert moved["c"]["rows_moved_rate"] == 0.0 and moved["c"]["mean_shift_alone"] == 0.0


def test_each_output_of_a_multi_output_model_is_attacked_on_its_own():
    weights = [[1.0, 2.0, -3.0], [0.0, -1.0, 0.5]]
    data = frame()
    table, summary = _robustness(data, LinearScorer(weights), epsilon=0.1, bounds="none")
    std = data.std(ddof=1).to_numpy()
    for output, w in zip(["output_0", "output_1"], weights, strict=True):
        expected = 0.1 * float((np.abs(w) * std).sum())
        np.testing.assert_allclose(table.loc[table["output"] == output, "shift"], expected,
                                   rtol=1e-12)
    assert [r["output"] for r in summary] == ["output_0", "output_1"]


def test_observed_bounds_keep_every_feature_inside_the_data_range():
    data = frame(rows=40)
    table, _ = _robustness(data, LinearScorer(W), epsilon=0.5, bounds="observed")
    x, std = data.to_numpy(), data.std(ddof=1).to_numpy()
    low, high = x.min(0), x.max(0)
    w = np.array(W)
    radius = 0.5 * std
    room_up = np.where(w > 0, high - x, x - low)  # how far the score-raising move can go
    room_down = np.where(w > 0, x - low, high - x)
    up = (np.abs(w) * np.minimum(radius, room_up)).sum(1)
    down = (np.abs(w) * np.minimum(radius, room_down)).sum(1)
    np.testing.assert_allclose(table["shift_up"], up, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(table["shift_down"], down, rtol=1e-10, atol=1e-12)
    # The rows at a feature's extreme really are held back.
    assert (table["shift_up"] < 0.5 * (np.abs(w) * std).sum() - 1e-9).any()


def test_rows_pushed_across_the_threshold():
    data = frame()
    model = LinearScorer(W)
    threshold = 2.0
    table, summary = _robustness(data, model, epsilon=0.1, bounds="none", threshold=threshold)
    shift = 0.1 * float((np.abs(W) * data.std(ddof=1).to_numpy()).sum())
    score = data.to_numpy() @ np.array(W)
    above = score >= threshold
    crosses = np.where(above, shift > score - threshold, shift >= threshold - score)
    assert table["crosses_threshold"].tolist() == crosses.tolist()
    assert 0 < crosses.sum() < len(data)
    record = summary[0]
    assert record["rows_crossing"] == int(crosses.sum())
    assert record["crossing_rate"] == pytest.approx(crosses.mean())


def test_the_attack_finds_the_optimum_of_a_nonlinear_separable_score():
    """y = sin(2a) + b^2: the best move of each feature within its box is found on a fine 1-D
    grid; projected gradient steps must reach that optimum (from below)."""
    def model(x):
        return torch.sin(2 * x[:, 0]) + x[:, 1] ** 2

    x = torch.tensor([[0.1, 0.3], [0.7, -0.2], [-0.4, 0.05], [1.2, 1.0]], dtype=torch.float64)
    radius = torch.tensor([0.5, 0.4], dtype=torch.float64)
    attack = adversarial_shift(model, x, radius, steps=40)
    grid = torch.linspace(-1, 1, 20001, dtype=torch.float64)
    best_up, best_down = [], []
    for row in x:
        a = torch.sin(2 * (row[0] + grid * radius[0])) - torch.sin(2 * row[0])
        b = (row[1] + grid * radius[1]) ** 2 - row[1] ** 2
        best_up.append(float(a.max() + b.max()))
        best_down.append(float(-(a.min() + b.min())))
    np.testing.assert_allclose(attack.up[:, 0].numpy(), best_up, rtol=2e-3)
    np.testing.assert_allclose(attack.down[:, 0].numpy(), best_down, rtol=2e-3)


def test_gate_and_every_report_format(tmp_path):
    data = frame().assign(id=[f"r{i}" for i in range(60)])
    expected = 0.1 * float((np.abs(W) * data[["a", "b", "c"]].std(ddof=1).to_numpy()).sum())
    config = write_setup(tmp_path, LinearScorer(W), data,
                         {"threshold": 2.0,
                          "robustness": {"epsilon": 0.1, "bounds": "none",
                                         "max_shift": round(expected * 0.9, 6)}},
                         data_extra={"id": "id"})
    code, summary = run_cli(config)
    assert code == 1 and summary["passed"] is False
    (flag,) = summary["flags"]
    assert flag["feature"] == "adversarial shift" and flag["limit"].startswith(
        "95th-percentile shift <= ")
    (record,) = summary["robustness"]
    assert {"output", "epsilon", "mean_shift", "p95_shift", "max_shift", "limit",
            "passed"} <= set(record)
    assert record["passed"] is False and record["p95_shift"] == pytest.approx(expected)
    out = tmp_path / "out"
    csv = pd.read_csv(out / "robustness.csv")
    assert csv.columns.tolist() == ["id", "output", "score", "shift_up", "shift_down", "shift",
                                    "crosses_threshold"]
    assert csv["id"].tolist() == data["id"].tolist()
    report = (out / "report.md").read_text()
    assert "## Adversarial shift" in report and "**Adversarial shift** over its limit" in report
    assert "## Rows most easily pushed across the threshold 2" in report

    # Under the limit: the same figure, as a note, and the audit passes.
    config.write_text(config.read_text().replace(f"max_shift: {round(expected * 0.9, 6)}",
                                                 f"max_shift: {round(expected * 1.1, 6)}"))
    code, summary = run_cli(config)
    assert code == 0 and summary["robustness"][0]["passed"] is True
    assert "Adversarial shift within 0.1 standard deviations" in (out / "report.md").read_text()
