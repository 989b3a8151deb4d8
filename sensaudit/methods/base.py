"""The attribution-method protocol: a chunk of rows in, per-row attributions out.

A method is one file in this folder and one line in :data:`sensaudit.methods.METHODS`. The
pipeline hands it the prepared model and each chunk of rows; everything downstream (the
sensitivity table, the checks, examples.csv, ``compare``) consumes the attributions it returns,
so a new method needs no edits anywhere else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..engine import Model


@dataclass
class Attributions:
    """One chunk's results, on the model's device and dtype.

    scores: [rows, outputs]; values: [rows, outputs, features].
    """

    scores: torch.Tensor
    values: torch.Tensor


class AttributionMethod(ABC):
    """How much each feature moves each output, per row.

    ``per_unit`` says what unit the values are in. True (gradients): score change per unit
    of the feature, so the audit scales them by the feature's standard deviation to compare
    features measured on different scales (a row's *contribution* is value x std). False:
    already in score units (e.g. gradient x input), used as they are.
    """

    name: ClassVar[str]
    per_unit: ClassVar[bool]
    description: ClassVar[str]

    def __init__(self, *, batch_size: int | None = None):
        self.batch_size = batch_size

    @abstractmethod
    def attribute(self, model: Model, x: torch.Tensor) -> Attributions:
        """x: float [rows, features] -> scores and attributions for every row, batched (no
        Python loop over rows). Raise ModelError for a model that cannot be attributed."""
