"""The attribution-method protocol: a chunk of rows in, per-row attributions out.

A method is one file in this folder and one line in :data:`sensaudit.methods.METHODS`. The
pipeline hands it the prepared model and each chunk of rows; everything downstream (the
sensitivity table, the checks, examples.csv, ``compare``) consumes the attributions it returns,
so a new method needs no edits anywhere else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from sensaudit.core.errors import ConfigError
from sensaudit.core.jacobian import Model
from sensaudit.settings.options import build_options

if TYPE_CHECKING:
    from sensaudit.settings.sections import AuditSettings


@dataclass
class Attributions:
    """One chunk's results, on the model's device and dtype.

    scores: [rows, outputs]; values: [rows, outputs, features]; baseline_scores: [outputs],
    the model's scores at the baseline, for methods whose attributions sum to
    scores - baseline_scores (``AttributionMethod.complete``), else None.
    """

    scores: torch.Tensor
    values: torch.Tensor
    baseline_scores: torch.Tensor | None = None


class AttributionMethod(ABC):
    """How much each feature moves each output, per row.

    ``per_unit`` says what unit the values are in. True (gradients): score change per unit
    of the feature, so the audit scales them by the feature's standard deviation to compare
    features measured on different scales, and a row's *contribution* is value x (x -
    baseline). False: already in score units (e.g. gradient x input), used as they are.

    ``needs`` names what the method uses before its first row, measured by the audit in a
    pre-pass and handed to :meth:`prepare`: "baseline" (the reference point, audit.baseline)
    and/or "std" (the features' standard deviations). ``complete``: the attributions of a row
    sum to f(x) - f(baseline) (the completeness check measures how closely).
    ``Options``: the method's own ``audit.*`` config keys (``audit.samples``), a frozen
    dataclass declared with :func:`~sensaudit.settings.options.option` beside the method's
    code; the config accepts, checks and documents them from it, and :meth:`from_settings`
    hands their values to ``__init__`` as keyword arguments.
    ``row_gradient``: the values are the input gradient at the row itself, d output / d
    feature, so checks that judge the model's slope there (monotonicity) read them as they
    are; for any other method those checks compute the gradient they need.
    """

    name: ClassVar[str]
    per_unit: ClassVar[bool]
    description: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()
    complete: ClassVar[bool] = False
    Options: ClassVar[type | None] = None
    row_gradient: ClassVar[bool] = False

    def __init__(self, *, batch_size: int | None = None):
        self.batch_size = batch_size
        self.baseline: torch.Tensor | None = None  # float64 [features], set by prepare
        self.std: torch.Tensor | None = None  # float64 [features], set by prepare

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> AttributionMethod:
        """The method as the audit settings configure it: ``batch_size`` and every option it
        declares (defaults where the settings leave one out)."""
        return cls(batch_size=settings.batch_size, **cls.option_values(settings))

    @classmethod
    def option_values(cls, settings: AuditSettings) -> dict[str, Any]:
        """The values of the options this method declares, from ``settings.method_options``
        (checked against their declared limits: settings built in Python reach here
        unchecked), defaults filled in."""
        given = settings.method_options
        if cls.Options is None:
            for key in given:
                raise ConfigError(f"audit.{key} is not a setting of audit.method '{cls.name}' "
                                  "(it has none)")
            return {}
        options: object = build_options(cls.Options, given, "audit", from_config=False)
        return vars(options)  # an instance, not a class: its fields, as a plain dict

    def prepare(self, baseline: torch.Tensor, std: torch.Tensor) -> None:
        """The features' baseline and standard deviations (float64 [features]), before the
        first row is attributed."""
        self.baseline, self.std = baseline, std

    def parameters(self) -> dict[str, Any]:
        """The method's settings, as summary.json records them."""
        return {}

    @abstractmethod
    def attribute(self, model: Model, x: torch.Tensor) -> Attributions:
        """x: float [rows, features] -> scores and attributions for every row, batched (no
        Python loop over rows). Raise ModelError for a model that cannot be attributed."""

    def attribute_rows(self, model: Model, x: torch.Tensor, rows: np.ndarray) -> Attributions:
        """Like :meth:`attribute`, told the rows' numbers in the data (int64 [rows]): a
        method that draws random numbers draws them from the row numbers, so its results do
        not depend on how the rows were chunked."""
        return self.attribute(model, x)

    def _prepared(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """The baseline or std, on x's device and dtype; an error if prepare was not called."""
        value = self.baseline if what == "baseline" else self.std
        if value is None:
            raise RuntimeError(f"{self.name}: call prepare(baseline, std) before attribute "
                               "(sensaudit.attribute does this for you)")
        return value.to(x.device, x.dtype)
