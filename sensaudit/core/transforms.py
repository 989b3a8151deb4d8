"""``model.transform``: audit a classifier on probabilities instead of its logits.

The transform is applied to the model's whole output row, before ``model.output`` selects one
output: softmax needs every logit of the row (a softmax of one selected logit is always 1), and
sigmoid acts on each output alone, so for it the order changes nothing. Both act within one row,
so rows stay independent and the engine's batched gradients stay exact.
"""

from __future__ import annotations

import torch

from sensaudit.core.errors import ConfigError
from sensaudit.core.jacobian import Model


def transformed(module: Model, transform: str, n_outputs: int, source: object) -> Model:
    """``module`` followed by the transform; ``n_outputs`` is what the model returns per row."""
    if transform == "none":
        return module
    if transform == "sigmoid":
        return lambda x: torch.sigmoid(module(x))
    if transform == "softmax":
        if n_outputs < 2:
            raise ConfigError(f"{source}: model.transform 'softmax' needs a model with 2 or more "
                              f"outputs (this one returns {n_outputs}): the softmax of a single "
                              "logit is always 1; use 'sigmoid' for a single logit")
        return lambda x: torch.softmax(module(x).reshape(x.shape[0], -1), dim=1)
    raise ConfigError(f"{source}: model.transform must be one of none, sigmoid, softmax "
                      f"(got {transform!r})")
