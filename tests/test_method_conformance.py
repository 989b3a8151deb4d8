"""Every registered check under every registered attribution method: the verdicts about the
model must not depend on the method chosen to rank its features.

Model-defined (asserted equal across methods):
- ``monotonicity``: d score / d feature at the row, computed by the check whenever the method's
  values are not that gradient (gradient x input and integrated gradients attribute, smoothgrad
  averages slopes around the row);
- ``robustness``: an attack on the model within a budget in feature stds, which every method
  measures the same way;
- ``linearity``: the gradient against a finite step, recomputed by the check;
- ``layer_health``: the Jacobians with respect to the layers, taken on the model;
- ``one_hot_levels``: the score change of switching a row's level, a model call.

Method-defined (not asserted): ``proxy_limits``, ``dominance`` and ``suspects`` judge shares,
which are what the method measures (a share of gradient x std is not a share of gradient x
input); ``completeness`` measures a property of the method itself.

The model rises in ``a`` everywhere while half the rows lie below a's mean: there gradient x
(x - mean) is negative, which a check reading the attribution's sign takes for a violation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_checks import check_result
from torch import nn

from sensaudit import AuditSettings, audit_frame
from sensaudit.checks import CHECKS
from sensaudit.methods import METHODS
from sensaudit.settings.checks import (
    Expectation,
    FeatureGroup,
    LayerHealthSettings,
    LinearitySettings,
    RobustnessSettings,
)
from sensaudit.settings.options import declared
from sensaudit.settings.sections import ProxyLimit

# Each check declares which kind its verdict is (Check.judges_the_model), beside its code.
MODEL_DEFINED = tuple(cls.name for cls in CHECKS if cls.judges_the_model)


class Scorer(nn.Module):
    """A small float64 MLP whose output rises in ``a`` everywhere (a softplus-weighted skip
    term dominates) and falls in ``b`` on part of the rows only."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(11)
        self.hidden = nn.Linear(5, 8).double()
        self.out = nn.Linear(8, 1).double()
        with torch.no_grad():
            for p in (*self.hidden.parameters(), *self.out.parameters()):
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(torch.tanh(self.hidden(x)))[:, 0] + 2.0 * x[:, 0]
                             + torch.sin(2 * x[:, 1]))


def _data(rows: int = 240) -> pd.DataFrame:
    generator = np.random.default_rng(5)
    level = generator.integers(0, 3, rows)
    return pd.DataFrame({"a": generator.normal(0, 1, rows), "b": generator.normal(0, 1, rows),
                         "c": generator.normal(0, 1, rows),
                         "r0": (level == 0).astype(float), "r1": (level == 1).astype(float),
                         "label": generator.integers(0, 2, rows).astype(float)})


def _declared(method: str) -> set[str]:
    """The option keys the method declares (audit.samples for smoothgrad, ...)."""
    options = METHODS[method].Options
    return {d.key for d in declared(options)} if options is not None else set()


def _settings(method: str) -> AuditSettings:
    return AuditSettings(
        method=method, threshold=0.5,
        method_options={k: v for k, v in {"samples": 8, "steps": 16}.items()
                        if k in _declared(method)},
        proxies=(ProxyLimit("c", max_share=0.3),),
        expect=(Expectation("a", "increasing", 0.0), Expectation("b", "increasing", 0.0),
                Expectation("c", "decreasing", 0.5)),
        robustness=RobustnessSettings(epsilon=0.1, steps=5, max_shift=0.05),
        linearity=LinearitySettings(), layer_health=LayerHealthSettings(),
        groups=(FeatureGroup("region", ("r0", "r1"), "one_hot"),))


@pytest.fixture(scope="module")
def results():
    data, model = _data(), Scorer()
    return {method: audit_frame(model, data, label="label", settings=_settings(method),
                                chunk_rows=70)
            for method in METHODS}


def test_the_checks_about_the_model_declare_it():
    # The shipped checks whose verdict is about the model, not the attributions; proxy
    # limits, dominance and suspects judge shares, completeness the method itself.
    assert set(MODEL_DEFINED) >= {"monotonicity", "robustness", "linearity", "layer_health",
                                  "one_hot_levels"}
    assert not {"proxy_limits", "dominance", "suspects", "completeness"} & set(MODEL_DEFINED)


def _verdicts(check) -> list:
    return sorted([("gate", g.subject, g.output, g.passed) for g in check.gates]
                  + [("warning", w.subject, w.output) for w in check.warnings])


@pytest.mark.parametrize("name", MODEL_DEFINED)
def test_model_defined_verdicts_do_not_depend_on_the_method(results, name):
    reference = check_result(results["gradient"], name)
    for method, result in results.items():
        check = check_result(result, name)
        assert _verdicts(check) == _verdicts(reference), method
        for table, frame in reference.tables.items():
            got = check.tables[table]
            assert list(got.columns) == list(frame.columns), (method, table)
            # Rows in the method's ranking order (linearity lists features by rank): compare
            # by their keys.
            keys = [c for c in frame.columns if c in ("output", "feature", "layer", "from_level",
                                                     "to_level", "group")]
            if keys:
                got = got.sort_values(keys, kind="stable").reset_index(drop=True)
                frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
            numeric = frame.select_dtypes("number").columns
            # The figures themselves, not only the verdicts (linearity's off rate has a
            # floor read from the method's ranking; every other figure is the model's).
            skip = {"off_rate", "mean_relative_error"} if name == "linearity" else set()
            columns = [c for c in numeric if c not in skip]
            np.testing.assert_allclose(got[columns].to_numpy(float),
                                       frame[columns].to_numpy(float), rtol=1e-9, atol=1e-12,
                                       err_msg=f"{method}: {table}")


def test_monotonicity_judges_the_slope_not_the_attribution(results):
    # a rises everywhere: no violation under any method, though gradient x (x - mean) is
    # negative on about half the rows.
    for method, result in results.items():
        table = check_result(result, "monotonicity").tables["monotonicity.csv"]
        row = table.set_index("feature").loc["a"]
        assert row["violations"] == 0 and bool(row["passed"]), method
    gxi = results["gradient_x_input"]
    x = _data()["a"].to_numpy()
    assert (x < x.mean()).mean() > 0.4  # the premise: many rows with a negative attribution
    b = check_result(gxi, "monotonicity").tables["monotonicity.csv"].set_index("feature").loc["b"]
    assert 0 < b["violations"] < b["rows"]  # b's wrong-way rows are found, by their slope
