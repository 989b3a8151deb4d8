"""Attribution methods, one per file; ``audit.method`` picks one by name.

To add a method, subclass :class:`~sensaudit.methods.base.AttributionMethod` in a new file
and add it to :data:`METHODS` with one line (docs/extending.md).
"""

from __future__ import annotations

from sensaudit.methods.base import AttributionMethod
from sensaudit.methods.gradient import Gradient
from sensaudit.methods.gradient_x_input import GradientXInput
from sensaudit.methods.integrated_gradients import IntegratedGradients
from sensaudit.methods.smoothgrad import SmoothGrad

METHODS: dict[str, type[AttributionMethod]] = {
    Gradient.name: Gradient,
    GradientXInput.name: GradientXInput,
    SmoothGrad.name: SmoothGrad,
    IntegratedGradients.name: IntegratedGradients,
}

__all__ = ["METHODS"]
