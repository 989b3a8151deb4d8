"""audit.expect: monotonicity expectations, against a score whose gradient changes sign at a
known point.

y = (a - 2)^2 + b  ->  dy/da = 2 (a - 2): negative for a < 2, zero at a = 2, positive after.
So "increasing in a" is violated by exactly the rows with a < 2, "decreasing" by those with
a > 2, and the row at a = 2 (a zero gradient) violates neither.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_checks import LinearScorer, check_result, run_cli, write_setup
from torch import nn

from sensaudit import AuditSettings, audit_frame
from sensaudit.settings.checks import Expectation

A = [0.5, 1.0, 1.5, 1.9, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 2.2, 0.0]  # 5 below 2, 1 at 2, 6 above


class Valley(nn.Module):
    """y = (a - 2)^2 + b  ->  dy/da = 2 (a - 2), dy/db = 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0] - 2) ** 2 + x[:, 1]


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"a": A, "b": np.linspace(-1, 1, len(A))})


@pytest.mark.parametrize("direction, wrong", [("increasing", 5), ("decreasing", 6)])
def test_the_violation_rate_is_the_share_of_rows_on_the_wrong_side(direction, wrong):
    settings = AuditSettings(expect=(Expectation("a", direction, 0.0),
                                     Expectation("b", "increasing", 0.0)))
    result = audit_frame(Valley().double(), _frame(), settings=settings, chunk_rows=5)
    check = check_result(result, "monotonicity")
    by_feature = {r["feature"]: r for r in check.summary["monotonicity"]}
    assert by_feature["a"]["violation_rate"] == wrong / len(A)
    assert by_feature["a"]["violations"] == wrong and by_feature["a"]["rows"] == len(A)
    assert by_feature["a"]["passed"] is False
    assert by_feature["b"]["violation_rate"] == 0.0 and by_feature["b"]["passed"] is True
    # The worst rows: the largest gradient the wrong way, in order (the row ids are 1..n).
    wrong_rows = sorted(((2 * (a - 2), i + 1) for i, a in enumerate(A)
                         if (a < 2 if direction == "increasing" else a > 2)),
                        reverse=direction == "decreasing")
    assert [v["id"] for v in by_feature["a"]["worst_rows"]] == [r for _, r in wrong_rows][:5]
    assert by_feature["a"]["worst_rows"][0]["gradient"] == pytest.approx(wrong_rows[0][0])
    assert not result.passed
    assert [(g.check, g.subject) for g in result.gates.flags] == [("monotonicity", "a")]


def test_a_limit_above_the_rate_passes():
    settings = AuditSettings(expect=(Expectation("a", "increasing", 5 / len(A)),))
    result = audit_frame(Valley().double(), _frame(), settings=settings)
    assert result.passed
    assert "Expectation met: the score is increasing in a" in " ".join(result.findings)


def test_expectations_are_judged_per_output():
    weights = [[1.0, -1.0], [-1.0, 1.0]]
    settings = AuditSettings(expect=(Expectation("a", "increasing", 0.0),))
    result = audit_frame(LinearScorer(weights), _frame(), settings=settings)
    records = check_result(result, "monotonicity").summary["monotonicity"]
    assert [(r["output"], r["violation_rate"], r["passed"]) for r in records] == [
        ("output_0", 0.0, True), ("output_1", 1.0, False)]


def test_a_failed_expectation_fails_the_run_in_every_format(tmp_path):
    data = _frame().assign(id=[f"ad{i}" for i in range(len(A))])

    class Exportable(nn.Module):
        def forward(self, x):
            return (x[:, 0] - 2) ** 2 + x[:, 1]

    config = write_setup(tmp_path, Exportable(), data,
                         {"expect": [{"feature": "a", "direction": "increasing",
                                      "max_violation_rate": 0.1}]}, data_extra={"id": "id"})
    code, summary = run_cli(config)
    assert code == 1 and summary["passed"] is False
    (record,) = summary["monotonicity"]
    assert {k: record[k] for k in ("feature", "output", "direction", "violation_rate", "limit",
                                   "passed")} == {
        "feature": "a", "output": "score", "direction": "increasing",
        "violation_rate": 5 / len(A), "limit": 0.1, "passed": False}
    assert [f["feature"] for f in summary["flags"]] == ["a"]
    assert summary["flags"][0]["limit"] == "violation rate <= 10.00%"
    out = tmp_path / "out"
    csv = pd.read_csv(out / "monotonicity.csv")
    assert csv.loc[0, "violation_rate"] == pytest.approx(5 / len(A))
    report = (out / "report.md").read_text()
    assert "## Monotonicity expectations" in report
    assert "**a** is expected to be increasing, but on 41.7% of rows (5 of 12)" in report
    assert "ad11 (-4)" in report  # the worst row (a = 0) by its id
