"""``gradient``: each row's input Jacobian, d output_i / d feature_j (the default method)."""

from __future__ import annotations

import torch

from sensaudit.core.jacobian import Model, scores_and_jacobian
from sensaudit.methods.base import AttributionMethod, Attributions


class Gradient(AttributionMethod):
    name = "gradient"
    per_unit = True
    row_gradient = True
    description = ("how much each output changes per unit of each feature at the row (the "
                   "input gradient), scaled by each feature's std so that features measured on "
                   "different scales compare")

    def attribute(self, model: Model, x: torch.Tensor) -> Attributions:
        scores, jacobian = scores_and_jacobian(model, x, batch_size=self.batch_size)
        return Attributions(scores=scores, values=jacobian)
