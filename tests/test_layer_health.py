"""audit.layer_health: the score's Jacobian with respect to each layer, on a deep linear stack.

y = W4 W3 W2 W1 x (no biases, no activations). Layer l's output h_l = W_l ... W_1 x, and
y = W4 ... W_{l+1} h_l, so d y / d h_l = W4 ... W_{l+1} in every row: its Frobenius norm is the
norm of the product of the later layers' weights (1 for the last layer: d y / d y), and the
input's is the norm of the whole product.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_checks import check_result, frame, run_cli, write_setup
from torch import nn

from sensaudit import AuditSettings, audit_frame
from sensaudit.checks.layer_health import layer_jacobian_norms
from sensaudit.settings.checks import LayerHealthSettings

WIDTHS = [3, 6, 5, 4]


def _stack(outputs: int = 1, scale: float = 1.0) -> nn.Sequential:
    torch.manual_seed(4)
    widths = [*WIDTHS, outputs]
    # Consecutive widths: one layer per pair, so the shifted copy is one shorter.
    layers = [nn.Linear(a, b, bias=False) for a, b in zip(widths, widths[1:], strict=False)]
    for layer in layers:
        with torch.no_grad():
            layer.weight.mul_(scale)
    return nn.Sequential(*layers).double()


def _expected(stack: nn.Sequential) -> list[float]:
    """Norms at the input and at each layer's output, from the weights alone."""
    weights = [layer.weight.detach() for layer in stack]
    norms = []
    for start in range(len(weights) + 1):  # the product of the layers after `start`
        product = torch.eye(weights[-1].shape[0], dtype=torch.float64)
        for w in reversed(weights[start:]):
            product = product @ w
        norms.append(float(torch.linalg.matrix_norm(product)))
    return norms  # [input, after layer 1, ..., after the last layer]


@pytest.mark.parametrize("outputs", [1, 2])
def test_each_layers_norm_is_the_norm_of_the_later_weights_product(outputs):
    stack = _stack(outputs)
    x = torch.randn(9, 3, dtype=torch.float64)
    found = layer_jacobian_norms(stack, stack, x)
    assert [name for name, _, _ in found] == ["(input)", "0", "1", "2", "3"]
    assert [kind for _, kind, _ in found] == ["input", "Linear", "Linear", "Linear", "Linear"]
    for (_, _, norms), expected in zip(found, _expected(stack), strict=True):
        torch.testing.assert_close(norms, torch.full((9,), expected, dtype=torch.float64),
                                   rtol=1e-12, atol=1e-12)
    assert float(found[-1][2][0]) == pytest.approx(outputs ** 0.5)  # d y / d y = identity


def test_the_audit_reports_them_and_an_exported_program_gives_the_same(tmp_path):
    stack = _stack()
    data = frame(rows=30)
    settings = AuditSettings(layer_health=LayerHealthSettings())
    result = audit_frame(stack, data, settings=settings, chunk_rows=7)
    table = check_result(result, "layer_health").tables["layer_health.csv"]
    expected = _expected(stack)
    # Every row has the same norm, so the median is exact.
    np.testing.assert_allclose(table["median_norm"], expected, rtol=1e-12)
    np.testing.assert_allclose(table["p95_norm"], expected, rtol=1e-12)
    assert table["layer"].tolist() == ["(input)", "0", "1", "2", "3"]

    # The same model exported with torch.export: layers found in its graph.
    config = write_setup(tmp_path, stack, data, {"layer_health": {}})
    code, summary = run_cli(config)
    assert code == 0
    layers = summary["layer_health"]["layers"]
    assert [r["layer"] for r in layers] == ["(input)", "0", "1", "2", "3"]
    np.testing.assert_allclose([r["median_norm"] for r in layers], expected, rtol=1e-12)
    assert summary["layer_health"]["depth_ratio"] == pytest.approx(expected[1] / expected[4])
    csv = pd.read_csv(tmp_path / "out" / "layer_health.csv")
    assert csv["depth"].tolist() == [0, 1, 2, 3, 4]
    assert "## Layer Jacobian health" in (tmp_path / "out" / "report.md").read_text()


def test_shrinking_layers_warn_that_the_jacobian_vanishes_through_depth():
    stack = _stack(scale=0.02)  # each layer shrinks what passes through it ~50-fold
    expected = _expected(stack)
    ratio = expected[1] / expected[4]
    assert ratio < 1e-3
    result = audit_frame(stack, frame(rows=20),
                         settings=AuditSettings(layer_health=LayerHealthSettings(100.0)))
    check = check_result(result, "layer_health")
    (warning,) = check.warnings
    assert warning.details["depth_ratio"] == pytest.approx(ratio, rel=1e-9)
    assert check.findings[0].startswith("**Layer Jacobians vanish through depth**")
    assert result.passed
    gated = audit_frame(stack, frame(rows=20), settings=AuditSettings(
        layer_health=LayerHealthSettings(100.0, gate=True)))
    assert not gated.passed
    assert [g.subject for g in gated.gates.flags] == ["layer Jacobians"]


def test_layers_out_of_reach_leave_the_input_only(tmp_path):
    stack = _stack()
    scripted = torch.jit.script(stack)
    result = audit_frame(scripted, frame(rows=10),
                         settings=AuditSettings(layer_health=LayerHealthSettings()))
    check = check_result(result, "layer_health")
    assert check.tables["layer_health.csv"]["layer"].tolist() == ["(input)"]
    assert check.summary["layer_health"]["reachable"] is False
    assert "cannot be reached" in check.notes[0]
