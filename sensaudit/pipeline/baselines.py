"""Feature statistics known before attributing, and the baseline each row is compared with.

``audit.baseline`` is the reference point a row's explanation starts from: ``mean`` (the
audited rows' feature means, the default), ``zero``, ``median``, or a mapping feature -> value
(features it does not name take their mean). Gradient x input and integrated gradients need it
before the first row is attributed, and SmoothGrad needs the features' standard deviations for
its noise; for those the audit measures the statistics in a pre-pass over the data
(:class:`FeatureSummary`). The default ``gradient`` method, like a zero baseline, needs nothing
up front: the read pass's own moments give the means once every row is read, and the data is
read once.

Means and standard deviations are exact (:class:`~sensaudit.stats.accumulators.FeatureMoments`). The
median is exact up to :func:`median_sample_rows` rows (65,536 for up to 64 features); beyond that it
is the median of a uniform sample of that many rows, chosen by a hash of their row numbers
(:class:`~sensaudit.stats.row_sample.RowSample`), so the same rows are chosen whatever the chunking
and partial samples merge exactly. Its rank in the full data is then within about +-0.4% of the
middle (95%).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sensaudit.core.errors import ConfigError, did_you_mean
from sensaudit.stats.accumulators import FeatureMoments
from sensaudit.stats.row_sample import RowSample

BASELINE_KINDS = ("mean", "zero", "median")
BaselineSpec = str | Mapping[str, float]
# The row hash of the median sample: salted so it is not the bootstrap's weight stream.
_SAMPLE_SALT = 0x5EED_BA5E_11DE_AD00


def median_sample_rows(n_features: int) -> int:
    """Rows the median sample keeps: 65,536, fewer for wide data (at most 2**22 values,
    32 MiB in float64), never under 4,096."""
    return int(min(65_536, max(4_096, 2**22 // max(1, n_features))))


@dataclass(frozen=True)
class Reference:
    """Feature statistics over the audited rows, float64 [features] each."""

    mean: torch.Tensor
    std: torch.Tensor  # sample standard deviation (ddof=1)
    median: torch.Tensor | None = None  # None when not measured
    median_exact: bool = True


class FeatureSummary:
    """Exact feature means and standard deviations, and (when asked) the median sample, over
    chunks of rows; merges like every accumulator in :mod:`sensaudit.stats.accumulators`."""

    def __init__(self, n_features: int, *, median: bool, keep: int | None = None):
        self.moments = FeatureMoments(n_features)
        # The rows' features, float64 [kept, features], for the median.
        self.sample = (RowSample(keep or median_sample_rows(n_features), salt=_SAMPLE_SALT)
                       if median else None)
        # Per feature, the largest |value| of an integer-typed column (-1: none seen), to warn
        # where the model's dtype cannot hold such integers exactly.
        self.integer_max = torch.full((n_features,), -1.0, dtype=torch.float64)

    def update(self, rows: np.ndarray, x: torch.Tensor, *,
               exact: dict[int, np.ndarray] | None = None,
               integer_max: np.ndarray | None = None) -> None:
        """A chunk's rows; ``exact`` and ``integer_max`` are its integer columns' values and
        magnitudes (:class:`~sensaudit.inputs.table_chunks.Chunk`)."""
        self.moments.update(x, exact)
        if integer_max is not None:
            self.integer_max = torch.maximum(self.integer_max, torch.from_numpy(integer_max))
        if self.sample is not None:
            self.sample.update(rows, x.detach().to("cpu", torch.float64).numpy())

    def merge(self, other: FeatureSummary) -> None:
        self.moments.merge(other.moments)
        self.integer_max = torch.maximum(self.integer_max, other.integer_max)
        if self.sample is not None and other.sample is not None:
            self.sample.merge(other.sample)

    def reference(self, std: torch.Tensor | None = None) -> Reference:
        """The statistics; ``std`` replaces the moments' when the caller has checked it."""
        sample = self.sample
        return Reference(mean=self.moments.mean.clone(),
                         std=self.moments.std if std is None else std,
                         median=None if sample is None else self._median(sample),
                         median_exact=sample is None or sample.exact)


    def _median(self, sample: RowSample) -> torch.Tensor:
        """float64 [features]: the sample's medians (the middle two averaged for an even
        count), exact while the sample holds every row; NaN when empty."""
        if sample.values is None:
            return torch.full((len(self.moments.mean),), float("nan"), dtype=torch.float64)
        return torch.from_numpy(np.median(sample.values, axis=0))


def reference_of(x: torch.Tensor, *, median: bool = True) -> Reference:
    """Exact statistics of in-memory rows x: float [rows, features] (the Python API)."""
    values = x.detach().to("cpu", torch.float64)
    std = (values.std(0) if values.shape[0] > 1
           else torch.full((values.shape[1],), float("nan"), dtype=torch.float64))
    return Reference(mean=values.mean(0), std=std,
                     median=torch.from_numpy(np.median(values.numpy(), axis=0)) if median
                     else None)


def needs_data(spec: BaselineSpec, features: Sequence[str]) -> bool:
    """Whether the baseline is measured from the data (a mapping naming every feature, or
    zero, is not)."""
    if isinstance(spec, Mapping):
        return not set(features) <= set(spec)
    return spec != "zero"


def baseline_vector(spec: BaselineSpec, reference: Reference | None,
                    features: Sequence[str]) -> torch.Tensor:
    """float64 [features]: the baseline ``spec`` names, from ``reference`` where it is
    measured from the data."""
    n = len(features)
    if spec == "zero":
        return torch.zeros(n, dtype=torch.float64)
    if isinstance(spec, Mapping) and not needs_data(spec, features):
        return torch.tensor([float(spec[f]) for f in features], dtype=torch.float64)
    if reference is None:
        raise ValueError(f"baseline {spec!r} needs the features' statistics")
    if spec == "median":
        if reference.median is None:
            raise ValueError("baseline 'median' needs the features' medians")
        return reference.median.clone()
    vector = reference.mean.clone()
    if isinstance(spec, Mapping):
        for j, feature in enumerate(features):
            if feature in spec:
                vector[j] = float(spec[feature])
    return vector


def baseline_labels(spec: BaselineSpec, features: Sequence[str]) -> list[str]:
    """Per feature, what its baseline value is called in words: mean, median or baseline."""
    if isinstance(spec, Mapping):
        return ["baseline" if f in spec else "mean" for f in features]
    return [{"mean": "mean", "median": "median"}.get(spec, "baseline")] * len(features)


def describe_baseline(spec: BaselineSpec, vector: torch.Tensor, features: Sequence[str],
                      reference: Reference | None) -> dict[str, Any]:
    """The baseline as summary.json records it: its kind and every feature's value."""
    kind = "mapping" if isinstance(spec, Mapping) else spec
    record: dict[str, Any] = {"kind": kind,
                    "values": {f: float(v) for f, v in zip(features, vector.tolist(), strict=True)}}
    if kind == "mapping":
        record["given"] = {f: float(v) for f, v in spec.items()}  # type: ignore[union-attr]
    if kind == "median":
        record["exact"] = bool(reference is None or reference.median_exact)
    return record


def check_baseline(spec: BaselineSpec, features: Sequence[str], source: object) -> None:
    """A mapping baseline may only name audited features: a typo must not silently leave a
    feature at its mean."""
    if not isinstance(spec, Mapping):
        return
    for name in spec:
        if name not in features:
            raise ConfigError(f"{source}: audit.baseline names '{name}', which is not an "
                              f"audited feature{did_you_mean(name, features)} (features: "
                              f"{', '.join(features)})")
