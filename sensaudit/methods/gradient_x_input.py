"""``gradient_x_input``: gradient x (x - baseline), each row's local linear contribution."""

from __future__ import annotations

import torch

from sensaudit.core.jacobian import Model, scores_and_jacobian
from sensaudit.methods.base import AttributionMethod, Attributions


class GradientXInput(AttributionMethod):
    """values[r, i, j] = d f_i / d x_j (x_r) * (x_rj - b_j): what the score would lose if
    feature j moved from the row's value to the baseline and the model were linear there.
    Exact for a linear model (the attributions then sum to f(x) - f(b)); for others a local
    approximation, cheap as one gradient."""

    name = "gradient_x_input"
    per_unit = False
    description = ("the gradient at the row times the feature's distance from the baseline, "
                   "the row's local linear contribution in score units")
    needs = frozenset({"baseline"})

    def attribute(self, model: Model, x: torch.Tensor) -> Attributions:
        baseline = self._prepared(x, "baseline")
        scores, jacobian = scores_and_jacobian(model, x, batch_size=self.batch_size)
        return Attributions(scores=scores, values=jacobian * (x - baseline)[:, None, :])
