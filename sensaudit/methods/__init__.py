"""Attribution methods, one per file; ``audit.method`` picks one by name.

To add a method, subclass :class:`~sensaudit.methods.base.AttributionMethod` in a new file
and add it to :data:`METHODS` with one line (README, "Extending").
"""

from __future__ import annotations

from .base import AttributionMethod
from .gradient import Gradient
from .gradient_x_input import GradientXInput
from .integrated_gradients import IntegratedGradients
from .smoothgrad import SmoothGrad

METHODS: dict[str, type[AttributionMethod]] = {
    Gradient.name: Gradient,
    GradientXInput.name: GradientXInput,
    SmoothGrad.name: SmoothGrad,
    IntegratedGradients.name: IntegratedGradients,
}

__all__ = ["METHODS"]
