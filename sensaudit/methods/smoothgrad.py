"""``smoothgrad``: each row's gradient averaged over noisy copies of the row (Smilkov et al.,
2017), which smooths out the kinks and saturation a single gradient is sensitive to.

The noise is a pure function of (seed, row number, sample): a counter-based hash (SplitMix64,
as :class:`~sensaudit.stats.accumulators.PoissonBootstrap` uses for its weights) picks it from
tables of normal draws made from the seed (:class:`GaussianNoise`). So a row gets the same noise
whatever chunk it is read in, and the same seed gives the same report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sensaudit.core.chunking import default_batch_size
from sensaudit.core.jacobian import Model, as_output_matrix, scores_and_jacobian
from sensaudit.methods.base import AttributionMethod, Attributions
from sensaudit.settings.options import check_declared, integer, number, option
from sensaudit.settings.sections import MAX_SEED
from sensaudit.stats.accumulators import splitmix64

# Noisy copies attributed per engine call, in engine chunks (as integrated_gradients does).
_ENGINE_CHUNKS_PER_CALL = 4


def _signed(value: int) -> int:
    """A uint64 constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    return value - (1 << 64) if value >= 1 << 63 else value


_GAMMA = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic: it copies the sign)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64_torch(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors, wrapping as the uint64 original does (the
    same bits as :func:`sensaudit.stats.accumulators.splitmix64`; tests/test_methods.py checks)."""
    z = z + _GAMMA
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


# Rows of each noise table: a row's noisy copies pick one row of each table by a hash, so
# there are 4,096**2 (16.7M) distinct noise vectors.
NOISE_TABLE_ROWS = 4_096


class GaussianNoise:
    """Standard normal noise vectors, a pure function of (seed, row number, sample).

    noise[r, s] = (A[i] + B[j]) / sqrt(2), with i and j two 12-bit fields of a SplitMix64 hash
    of (seed, r, s), and A, B two NOISE_TABLE_ROWS x features tables of normal draws from the
    seed, each column centred and scaled to unit variance. Every coordinate then has mean 0
    and variance 1 exactly over the 16.7M combinations, coordinates are independent, and two
    copies of a row share a table row with probability 1/4,096 per table. Hashing every
    coordinate instead would cost more than the gradients of a small model.
    """

    def __init__(self, seed: int, features: int):
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        tables = torch.randn(2, NOISE_TABLE_ROWS, features, generator=generator,
                             dtype=torch.float64)
        tables = tables - tables.mean(1, keepdim=True)
        self.tables = tables / tables.pow(2).mean(1, keepdim=True).sqrt() / 2**0.5
        self._placed: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        with np.errstate(over="ignore"):
            self._key = _signed(int(splitmix64(np.array([seed], dtype=np.uint64))[0]))

    def indices(self, rows: np.ndarray, samples: int,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The table rows (int64 [rows, samples] each) the copies of these rows use."""
        row = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=device)
        sample = torch.arange(samples, device=device)
        bits = splitmix64_torch(splitmix64_torch(row + self._key)[:, None] + sample[None, :])
        mask = NOISE_TABLE_ROWS - 1
        return bits & mask, _shift_right(bits, 32) & mask

    def draw(self, rows: np.ndarray, samples: int, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """[rows, samples, features] standard normal noise in ``dtype`` on ``device``."""
        place = (torch.device(device), dtype)
        if place not in self._placed:
            self._placed[place] = self.tables.to(*place)
        tables = self._placed[place]
        first, second = self.indices(rows, samples, device)
        noise = tables[0][first]
        noise += tables[1][second]  # in place: one pass less over the largest tensor here
        return noise


# Each row costs `samples` gradients; beyond this only time grows.
MAX_SAMPLES = 10_000


@dataclass(frozen=True)
class SmoothGradOptions:
    """``audit.samples``, ``audit.noise``, ``audit.seed`` (with ``audit.method: smoothgrad``)."""

    samples: int = option(50, integer(1, MAX_SAMPLES), "noisy copies of each row")
    noise: float = option(0.2, number(low=0, low_open=True, expected="a finite number > 0"),
                          "the noise's scale, in feature standard deviations")
    seed: int = option(0, integer(0, MAX_SEED, maximum_text="2**64 - 1"),
                       "the noise is a function of (seed, row number, copy)")

    def __post_init__(self) -> None:
        check_declared(self)


class SmoothGrad(AttributionMethod):
    """values[r, i, j] = mean over s of d f_i / d x_j at x_r + noise[r, s], noise[r, s, j] ~
    N(0, (noise * std_j)^2), ``samples`` copies per row. A gradient (per unit of the
    feature), like ``gradient``; scores are f(x) at the row itself."""

    name = "smoothgrad"
    per_unit = True
    description = ("the gradient averaged over noisy copies of the row (noise in feature "
                   "standard deviations), scaled by each feature's std: the gradient with its "
                   "kinks and saturation smoothed out")
    needs = frozenset({"std"})
    Options = SmoothGradOptions

    def __init__(self, *, batch_size: int | None = None, samples: int = 50, noise: float = 0.2,
                 seed: int = 0):
        super().__init__(batch_size=batch_size)
        self.samples, self.noise, self.seed = samples, noise, seed
        self._noise: GaussianNoise | None = None

    def parameters(self) -> dict[str, Any]:
        return {"samples": self.samples, "noise": self.noise, "seed": self.seed}

    def noise_for(self, features: int) -> GaussianNoise:
        if self._noise is None or self._noise.tables.shape[2] != features:
            self._noise = GaussianNoise(self.seed, features)
        return self._noise

    def attribute(self, model: Model, x: torch.Tensor) -> Attributions:
        """Rows numbered 1, 2, ... in x's order."""
        return self.attribute_rows(model, x, np.arange(1, x.shape[0] + 1, dtype=np.int64))

    def attribute_rows(self, model: Model, x: torch.Tensor, rows: np.ndarray) -> Attributions:
        scale = self._prepared(x, "std") * self.noise  # [features]
        n, features = x.shape
        with torch.no_grad():
            scores = as_output_matrix(model(x), n)
        outputs = scores.shape[1]
        step = self.batch_size or default_batch_size(features, outputs, x.device)
        block = max(1, step * _ENGINE_CHUNKS_PER_CALL // self.samples)
        values = torch.empty(n, outputs, features, dtype=x.dtype, device=x.device)
        for start in range(0, n, block):  # blocks of rows, each with all its noisy copies
            part = x[start : start + block]
            noisy = self.noise_for(features).draw(rows[start : start + block], self.samples,
                                                  x.device, x.dtype)
            noisy.mul_(scale).add_(part[:, None, :])  # [block, samples, features], in place
            noisy = noisy.reshape(-1, features)
            _, jac = scores_and_jacobian(model, noisy, batch_size=self.batch_size)
            values[start : start + block] = jac.reshape(len(part), self.samples, outputs,
                                                        features).mean(1)
        return Attributions(scores=scores, values=values)
