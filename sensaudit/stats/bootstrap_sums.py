"""Per-row Poisson-bootstrap sums for checks whose interval needs every row's own weight (the
protected-proxies check, :mod:`sensaudit.checks.protected_proxies`): per-replicate weighted
feature variances and mean |attribution|. ``compare`` resamples hashed buckets of rows instead
(:mod:`sensaudit.stats.bucket_bootstrap`), which is far cheaper over millions of rows.
"""

from __future__ import annotations

import numpy as np
import torch

from sensaudit.stats.accumulators import PoissonBootstrap


class BootstrapMoments:
    """Per-replicate weighted feature variances. Sums are of values centred on a shift (the
    first chunk's mean) so float64 keeps its precision; merging re-centres on one shift."""

    def __init__(self, bootstrap: PoissonBootstrap, n_features: int):
        self.bootstrap = bootstrap
        b = bootstrap.samples
        self.shift: torch.Tensor | None = None
        self.w = torch.zeros(b, 1, dtype=torch.float64)
        self.s1 = torch.zeros(b, n_features, dtype=torch.float64)
        self.s2 = torch.zeros(b, n_features, dtype=torch.float64)

    def update(self, rows: np.ndarray, x: torch.Tensor,
               weights: torch.Tensor | None = None) -> None:
        """rows: int [rows]; x: float [rows, features]; weights: the rows' bootstrap weights
        when the caller already has them."""
        x = x.detach().to("cpu", torch.float64)
        if self.shift is None:
            self.shift = x.mean(0)
        centred = x - self.shift
        if weights is None:
            weights = self.bootstrap.weights(rows)
        self.w += weights.sum(1, keepdim=True)
        self.s1 += weights @ centred
        self.s2 += weights @ centred**2

    def merge(self, other: BootstrapMoments) -> None:
        if other.shift is None:
            return
        if self.shift is None:
            self.shift = other.shift
        # Sums around other's shift a, moved to ours c: with d = a - c,
        # sum w(x-c) = s1 + w d and sum w(x-c)^2 = s2 + 2 d s1 + w d^2.
        d = other.shift - self.shift
        self.s2 += other.s2 + 2 * d * other.s1 + other.w * d**2
        self.s1 += other.s1 + other.w * d
        self.w += other.w

    @property
    def std(self) -> torch.Tensor:
        """[samples, features] weighted sample standard deviations."""
        w = self.w.clamp_min(2)
        var = (self.s2 - self.s1**2 / w) / (w - 1)
        return var.clamp_min(0).sqrt()


class BootstrapSensitivity:
    """Per-replicate weighted mean |attribution| of one model."""

    def __init__(self, bootstrap: PoissonBootstrap):
        self.bootstrap = bootstrap
        self.w = torch.zeros(bootstrap.samples, 1, 1, dtype=torch.float64)
        self.sum_abs: torch.Tensor | float = 0.0  # [samples, outputs, features] once updated

    def update(self, weights: torch.Tensor, values: torch.Tensor, finite: torch.Tensor) -> None:
        """weights: [samples, rows]; values: [rows, outputs, features]; finite: bool [rows]."""
        w = weights * finite.to(torch.float64)
        a = values.detach().to("cpu", torch.float64).abs().nan_to_num(0.0, 0.0, 0.0)
        self.w += w.sum(1).reshape(-1, 1, 1)
        self.sum_abs += torch.einsum("br,rmn->bmn", w, a)

    def merge(self, other: BootstrapSensitivity) -> None:
        self.w += other.w
        self.sum_abs = self.sum_abs + other.sum_abs

    def shares(self, scale: torch.Tensor | None) -> torch.Tensor:
        """[samples, outputs, features] shares under each replicate's weights; ``scale``
        [samples, features] multiplies per-unit attributions (gradients) by each replicate's
        feature std, None leaves score-unit attributions as they are."""
        scaled = self.sum_abs / self.w.clamp_min(1)
        if scale is not None:
            scaled = scaled * scale[:, None, :]
        total = scaled.sum(2, keepdim=True)
        return torch.where(total > 0, scaled / total, torch.zeros_like(scaled))


# --- per-row agreement of two models (`compare`) ------------------------------------------------

COSINE_BINS = 2000  # histogram resolution for the cosine quantiles: 0.001
