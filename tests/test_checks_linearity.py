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
