"""``integrated_gradients``: (x - baseline) x the mean gradient along the straight path from
the baseline to the row (Sundararajan et al., 2017), by Gauss-Legendre quadrature."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sensaudit.core.chunking import default_batch_size
from sensaudit.core.jacobian import Model, as_output_matrix, scores_and_jacobian
from sensaudit.methods.base import AttributionMethod, Attributions
from sensaudit.settings.options import check_declared, integer, option

# Path points attributed per engine call, in engine chunks: enough to keep the engine busy,
# few enough that the [points, outputs, features] Jacobian stays small.
_ENGINE_CHUNKS_PER_CALL = 4


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in (0, 1) and weights summing to 1 of the ``steps``-point Gauss-Legendre rule,
    float64 [steps] each. It integrates polynomials of degree up to 2 steps - 1 exactly, so
    already at one step (the midpoint) a gradient linear along the path (a quadratic model)
    is integrated exactly."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2


# Each row costs `steps` gradients; beyond this only time grows.
MAX_STEPS = 10_000


@dataclass(frozen=True)
class IntegratedGradientsOptions:
    """``audit.steps`` (with ``audit.method: integrated_gradients``)."""

    steps: int = option(50, integer(1, MAX_STEPS), "Gauss-Legendre points along the path")

    def __post_init__(self) -> None:
        check_declared(self)


class IntegratedGradients(AttributionMethod):
    """values[r, i, j] = (x_rj - b_j) * integral over a in [0, 1] of d f_i / d x_j at
    b + a (x_r - b). Complete: a row's attributions sum to f_i(x_r) - f_i(b), up to the
    quadrature error (the completeness check reports the gap). Each row costs ``steps``
    gradients, batched: every row's path points go through the engine together."""

    name = "integrated_gradients"
    per_unit = False
    description = ("the row's distance from the baseline times the mean gradient along the "
                   "straight path between them: how much of the score's change from the "
                   "baseline each feature accounts for, in score units")
    needs = frozenset({"baseline"})
    complete = True
    Options = IntegratedGradientsOptions

    def __init__(self, *, batch_size: int | None = None, steps: int = 50):
        super().__init__(batch_size=batch_size)
        self.steps = steps
        self.nodes, self.weights = gauss_legendre(steps)

    def parameters(self) -> dict[str, Any]:
        return {"steps": self.steps, "rule": "gauss-legendre"}

    def attribute(self, model: Model, x: torch.Tensor) -> Attributions:
        baseline = self._prepared(x, "baseline")
        rows, features = x.shape
        with torch.no_grad():
            scores = as_output_matrix(model(x), rows)
            baseline_scores = as_output_matrix(model(baseline[None, :]), 1)[0]
        outputs = scores.shape[1]
        alphas = torch.from_numpy(self.nodes).to(x.device, x.dtype)
        weights = torch.from_numpy(self.weights).to(x.device, x.dtype)
        step = self.batch_size or default_batch_size(features, outputs, x.device)
        block = max(1, step * _ENGINE_CHUNKS_PER_CALL // self.steps)
        values = torch.empty(rows, outputs, features, dtype=x.dtype, device=x.device)
        for start in range(0, rows, block):  # blocks of rows, each with all its path points
            diff = x[start : start + block] - baseline  # [block, features]
            points = baseline + alphas[None, :, None] * diff[:, None, :]  # [block, steps, f]
            _, jac = scores_and_jacobian(model, points.reshape(-1, features),
                                         batch_size=self.batch_size)
            mean_gradient = torch.einsum("bkof,k->bof",
                                         jac.reshape(len(diff), self.steps, outputs, features),
                                         weights)
            values[start : start + block] = mean_gradient * diff[:, None, :]
        return Attributions(scores=scores, values=values, baseline_scores=baseline_scores)
