"""audit.linearity: the gradient against a finite step, on a linear model (perfect) and across a
ReLU kink (known rows off).

y = relu(a - 1) + b. A row far from the kink (|a - 1| > step) changes exactly as its gradient
says, both ways. A row just below it (gradient 0) rises by about a step when a grows; a row just
above it (gradient 1) barely falls when a shrinks: both are off. So the off rate of a is the
share of rows within a step of the kink, and b (linear) is never off.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_checks import LinearScorer, check_result, frame, run_cli, write_setup
from torch import nn

from sensaudit import AuditSettings, audit_frame
from sensaudit.settings.checks import LinearitySettings

FAR = [-3.0, -2.0, -1.0, 0.0, 2.0, 3.0, 4.0, 5.0]
NEAR = [0.999, 0.9995, 1.0005, 1.001]


class Kink(nn.Module):
    """y = relu(a - 1) + b  ->  dy/da = 1 where a > 1, else 0; dy/db = 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x[:, 0] - 1) + x[:, 1]


def _kink_frame() -> pd.DataFrame:
    a = FAR + NEAR
    data = pd.DataFrame({"a": a, "b": np.linspace(0, 3, len(a))})
    step = 0.1 * data["a"].std()
    # The premise: far rows are more than a step from the kink, near ones much less.
    assert min(abs(v - 1) for v in FAR) > step > 100 * max(abs(v - 1) for v in NEAR)
    return data


def _linearity(model, data, **options):
    settings = AuditSettings(linearity=LinearitySettings(**options))
    result = audit_frame(model, data, settings=settings, chunk_rows=5)
    check = check_result(result, "linearity")
    return result, check, check.tables["linearity.csv"].set_index("feature")


def test_a_linear_model_is_perfectly_linear():
    result, check, table = _linearity(LinearScorer([1.5, -0.5, 4.0]), frame())
    np.testing.assert_allclose(table["agreement"], 1.0, rtol=1e-9)
    assert (table["off_rate"] == 0).all() and (table["mean_relative_error"] < 1e-9).all()
    assert not check.warnings and result.passed
    assert any(n.startswith("Local linearity: for every feature") for n in check.notes)


def test_a_relu_kink_is_flagged_on_exactly_the_rows_beside_it():
    result, check, table = _linearity(Kink().double(), _kink_frame())
    assert table.loc["a", "off_rate"] == pytest.approx(len(NEAR) / (len(FAR) + len(NEAR)))
    assert table.loc["b", "off_rate"] == 0.0
    assert table.loc["b", "agreement"] == pytest.approx(1.0)
    assert [(w.subject, w.details["off_rate"]) for w in check.warnings] == [
        ("a", pytest.approx(1 / 3))]
    assert result.passed  # a warning, not a failed gate
    assert "**a**'s gradient does not predict a step of 0.1 std: on 33.3% of rows" in (
        check.findings[0])


def test_gate_true_fails_the_audit(tmp_path):
    config = write_setup(tmp_path, Kink(), _kink_frame(),
                         {"linearity": {"step": 0.1, "tolerance": 0.1, "max_off_rate": 0.2,
                                        "gate": True}})
    code, summary = run_cli(config)
    assert code == 1
    assert [(f["feature"], f["limit"]) for f in summary["flags"]] == [("a", "off rate <= 20%")]
    by_feature = {r["feature"]: r for r in summary["linearity"]}
    assert by_feature["a"]["off_rate"] == pytest.approx(1 / 3)
    out = tmp_path / "out"
    ranked = [r["feature"] for r in summary["ranking"]["score"]]
    assert pd.read_csv(out / "linearity.csv")["feature"].tolist() == ranked
    assert "## Local linearity (gradient vs a finite step)" in (out / "report.md").read_text()


def _trained(model: nn.Module, x: np.ndarray, y: np.ndarray, loss, steps: int, lr: float):
    """``model`` fitted to (x, y) by Adam from a fixed seed: a model nobody tuned the check on."""
    xt, yt = torch.tensor(x), torch.tensor(y)
    optimiser = torch.optim.Adam(model.parameters(), lr)
    for _ in range(steps):
        optimiser.zero_grad()
        loss(model(xt)[:, 0], yt).backward()
        optimiser.step()
    return model.eval()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_trained_relu_mlp_does_not_cry_wolf(seed):
    # Every ReLU network has kinks, and a 0.1-std step crosses some on many rows: 15-45% of
    # rows are off per feature, yet the gradient misses a one-std move by a few percent of
    # the score's spread at most. Not material: no warning (main warned on all 11 features).
    generator = np.random.default_rng(seed)
    x = generator.normal(size=(600, 11))
    y = (np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.5 * x[:, 3] ** 2 - x[:, 4]
         + 0.3 * x[:, 5:].sum(1) + 0.1 * generator.normal(size=600))
    torch.manual_seed(seed)
    mlp = nn.Sequential(nn.Linear(11, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                        nn.Linear(32, 1)).double()
    _trained(mlp, x, y, nn.functional.mse_loss, 300, 1e-2)
    result, check, table = _linearity(mlp, pd.DataFrame(x, columns=[f"f{i}" for i in range(11)]))
    assert (table["off_rate"] > 0.05).sum() >= 8  # the premise: kinks put many rows off
    assert (table["agreement"] - 1).abs().max() < 0.03
    assert table["material_error"].max() < 0.1
    assert not check.warnings and result.passed
    assert any("not material" in n for n in check.notes)


def test_a_saturated_sigmoid_warns():
    # A logistic model fitted to separable classes saturates: its weights grow until a 0.1-std
    # step moves the logit by about 2, and the gradient at the rows on the slope badly
    # mispredicts such a step, by a third of the score's spread.
    generator = np.random.default_rng(4)
    x = generator.normal(size=(600, 6))
    y = (x @ np.array([2.0, -1.0, 1.0, 0.5, 0.0, 0.3]) > 0).astype(float)
    torch.manual_seed(4)
    logistic = nn.Sequential(nn.Linear(6, 1), nn.Sigmoid()).double()
    _trained(logistic, x, y, nn.functional.binary_cross_entropy, 2000, 0.1)
    assert logistic[0].weight.abs().max() > 15  # the premise: saturated
    result, check, table = _linearity(logistic,
                                      pd.DataFrame(x, columns=[f"f{i}" for i in range(6)]))
    assert table.loc["f0", "material_error"] > 0.3
    assert "f0" in {w.subject for w in check.warnings}
    assert "f4" not in {w.subject for w in check.warnings}  # weight ~0: nothing to mispredict
    assert result.passed  # warnings, not failed gates
