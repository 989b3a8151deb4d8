"""`compare`'s paired bootstrap, over hashed buckets of rows instead of single rows.

Every row goes to one of ``buckets`` buckets by a hash of (seed, row number); each bucket keeps
float64 sums of its rows: the row count, the inputs and their squares (about a shift), and per
model the finite rows' count and their |attribution| sums. A replicate gives every bucket a
Poisson(1) weight, a hash of (seed, replicate, bucket number) as
:class:`~sensaudit.stats.accumulators.PoissonBootstrap` draws it, so its weighted sums are one
matrix product [samples, buckets] @ [buckets, columns] at the end, instead of [samples, rows]
weights drawn and multiplied for every chunk (the row bootstrap this replaces cost about 35 s
per 1,000 replicates per million rows; this costs a scatter-add per row and a fixed product).

Why it is a valid bootstrap: the bucket of a row is a hash of its number, independent of its
values, so when the rows are a random sample the buckets' sums are independent and identically
distributed (a bucket holds a Poisson number of random rows). Every figure the intervals use is
a smooth function of means of those sums, so resampling buckets is the cluster bootstrap of
iid clusters: its variance matches the row bootstrap's to first order (both estimate
Var(sum of the rows' influence values)), and so does its skewness (a bucket sum's skewness
shrinks by sqrt(rows per bucket) and the mean over buckets gives back the factor). What it
gives up is the variance estimate's own precision, about sqrt(2 / buckets) relative: 2% at
4,096 buckets, well under the Monte Carlo noise of 1,000 replicates' 2.5% and 97.5% quantiles.
With fewer rows than buckets nearly every row is its own bucket: the row bootstrap itself. A
file sorted by a column does not matter: buckets are hashed, not runs of neighbouring rows.

The sums merge by addition (the inputs' after moving them to one shift), so the intervals are
the same, up to float64 rounding, for any chunk size, partition of the rows or engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sensaudit.stats.accumulators import PoissonBootstrap, splitmix64
from sensaudit.stats.scratch import reused

# 4,096 buckets: the bootstrap's variance is then known to about 2% (see the module), and the
# final product [samples, buckets] @ [buckets, columns] costs well under a second.
MAX_BUCKETS = 4096
# The sums are [buckets, features x outputs] per model: fewer buckets for very wide models, so
# that a model's sums stay within 2**25 float64 values (256 MiB), the bound compare's
# replicates are held to (pipeline.compare.MAX_BOOTSTRAP_ELEMENTS); compare refuses more
# replicates than that bound allows, so there are never fewer buckets than replicates.
MAX_SUM_ELEMENTS = 2**25
# Rows scattered at a time: the [rows, features] float64 blocks they fill stay within 32 MiB,
# in memory reused from chunk to chunk. Large blocks: each elementwise step over a block is a
# parallel region, and on a busy 2-core machine entering one costs more than small blocks save.
BLOCK_ELEMENTS = 2**22
# Buckets weighted at a time at the end: the [samples, buckets] weights stay near 128 MiB.
WEIGHT_ELEMENTS = 2**24
# The hash that picks a row's bucket, salted so it is not the replicate weights' stream: a
# replicate's key is seed x 0x100000001B3 ^ (replicate << 40), and this salt, with bits set
# below bit 40, is no replicate's.
_BUCKET_SALT = 0xB0C4_E75A_17ED_0000


def bucket_count(columns: int) -> int:
    """How many buckets, for sums [buckets, ``columns``] per model (features x outputs)."""
    return max(1, min(MAX_BUCKETS, MAX_SUM_ELEMENTS // max(columns, 1)))


def buckets_of(rows: np.ndarray, seed: int, buckets: int) -> torch.Tensor:
    """int64 [rows]: each 1-based row number's bucket, 0 .. buckets - 1, a pure function of
    (seed, row)."""
    with np.errstate(over="ignore"):
        key = (np.uint64(seed) * np.uint64(0x100000001B3)) ^ np.uint64(_BUCKET_SALT)
        z = splitmix64(np.asarray(rows, dtype=np.uint64) + key)
    return torch.from_numpy((z % np.uint64(buckets)).astype(np.int64))


@dataclass
class Resampled:
    """Each replicate's figures: the inputs' standard deviations float64 [samples, features],
    and per model its mean |attribution| float64 [samples, outputs, features]."""

    std: torch.Tensor
    mean_abs: list[torch.Tensor]

    def shares(self, model: int, per_unit: bool) -> torch.Tensor:
        """[samples, outputs, features] shares of one model under each replicate; per-unit
        attributions (gradients) are scaled by the replicate's feature std first."""
        scaled = self.mean_abs[model]
        if per_unit:
            scaled = scaled * self.std[:, None, :]
        return normalised(scaled)


def normalised(scaled: torch.Tensor) -> torch.Tensor:
    """Shares over the last axis (0 where every value is 0)."""
    total = scaled.sum(-1, keepdim=True)
    return torch.where(total > 0, scaled / total, torch.zeros_like(scaled))


class BucketBootstrap:
    """The paired bootstrap's per-bucket sums for ``models`` models on the same rows (see the
    module). Sized at the first update, when the models' outputs are known."""

    def __init__(self, samples: int, seed: int, n_features: int, models: int = 2,
                 buckets: int | None = None):
        self.samples = samples
        self.seed = seed
        self.n_features = n_features
        self.models = models
        self.buckets = buckets  # None: bucket_count of the models' columns
        self.outputs = 0
        self.shift: torch.Tensor | None = None  # float64 [features]: the inputs' sums are about it
        # float64, one row per bucket: the rows [buckets]; the inputs about the shift and their
        # squares [buckets, features]; per model its finite rows [buckets] and their
        # |attributions| [buckets, outputs x features]. Separate contiguous arrays: a scatter
        # into each is faster than into column slices of one.
        self.rows = torch.zeros(0, dtype=torch.float64)
        self.s1 = torch.zeros(0, 0, dtype=torch.float64)
        self.s2 = torch.zeros(0, 0, dtype=torch.float64)
        self.model_rows: list[torch.Tensor] = []
        self.model_abs: list[torch.Tensor] = []

    def _start(self, x: torch.Tensor, outputs: int) -> None:
        self.outputs = outputs
        b = self.buckets = self.buckets or bucket_count(self.n_features * outputs)
        self.shift = x.detach().to("cpu", torch.float64).mean(0)
        self.rows = torch.zeros(b, dtype=torch.float64)
        self.s1 = torch.zeros(b, self.n_features, dtype=torch.float64)
        self.s2 = torch.zeros(b, self.n_features, dtype=torch.float64)
        self.model_rows = [torch.zeros(b, dtype=torch.float64) for _ in range(self.models)]
        self.model_abs = [torch.zeros(b, outputs * self.n_features, dtype=torch.float64)
                          for _ in range(self.models)]

    def update(self, rows: np.ndarray, x: torch.Tensor, values: Sequence[torch.Tensor],
               finite: Sequence[torch.Tensor]) -> None:
        """rows: int [rows] 1-based row numbers; x: float [rows, features]; per model its
        attributions [rows, outputs, features] and the bool [rows] mask of its finite rows."""
        n = len(rows)
        if n == 0 or self.samples == 0:
            return
        if self.shift is None:
            self._start(x, values[0].shape[1])
        if self.shift is None or self.buckets is None:
            raise RuntimeError("the bootstrap's sums were not started")
        bucket = buckets_of(rows, self.seed, self.buckets)
        self.rows += torch.bincount(bucket, minlength=self.buckets).to(torch.float64)
        for kept, total in zip(finite, self.model_rows, strict=True):
            total += torch.bincount(bucket, kept.cpu().to(torch.float64), self.buckets)
        width = max(self.n_features, self.outputs * self.n_features)
        step = max(1, BLOCK_ELEMENTS // width)
        for start in range(0, n, step):
            part = slice(start, min(start + step, n))
            index = bucket[part]
            block = reused((part.stop - part.start, self.n_features), torch.float64,
                           slot="bucket_bootstrap")
            torch.sub(x[part].detach().cpu(), self.shift, out=block)  # widened and centred
            # index_put_ with accumulate adds the rows in order on one thread: index_add_ on
            # 2 threads took 100 times as long on a loaded 2-core machine.
            self.s1.index_put_((index,), block, accumulate=True)
            self.s2.index_put_((index,), block.square_(), accumulate=True)
            for model_values, kept, total in zip(values, finite, self.model_abs, strict=True):
                flat = model_values[part].detach().flatten(1)
                block = reused(tuple(flat.shape), torch.float64, slot="bucket_bootstrap")
                block.copy_(flat).abs_()
                kept = kept[part].cpu()
                if not bool(kept.all()):
                    block[~kept] = 0.0  # a row with a NaN or inf counts for nothing
                total.index_put_((index,), block, accumulate=True)

    def merge(self, other: BucketBootstrap) -> None:
        if other.shift is None:
            return
        if self.shift is None:
            self.buckets, self.outputs, self.shift = other.buckets, other.outputs, other.shift
            self.rows, self.s1, self.s2 = other.rows.clone(), other.s1.clone(), other.s2.clone()
            self.model_rows = [t.clone() for t in other.model_rows]
            self.model_abs = [t.clone() for t in other.model_abs]
            return
        # Other's input sums are about its shift a; ours about c. With d = a - c:
        # sum (x-c) = s1 + n d and sum (x-c)^2 = s2 + 2 d s1 + n d^2.
        d = other.shift - self.shift
        count = other.rows[:, None]
        self.s2 += other.s2 + 2 * d * other.s1 + count * d**2
        self.s1 += other.s1 + count * d
        self.rows += other.rows
        for mine, theirs in zip(self.model_rows + self.model_abs,
                                other.model_rows + other.model_abs, strict=True):
            mine += theirs

    def resampled(self) -> Resampled:
        """Every replicate's figures from the buckets' sums under its Poisson weights."""
        f = self.n_features
        filled = (self.rows > 0).nonzero().flatten()
        # One product per model, each of the same shape: two models with the same values get
        # bit-identical replicates (a change of exactly 0), which columns of one product would
        # not promise.
        moments, *models = self._weighted_sums(filled, [
            torch.cat([self.rows[filled, None], self.s1[filled], self.s2[filled]], 1),
            *(torch.cat([r[filled, None], a[filled]], 1)
              for r, a in zip(self.model_rows, self.model_abs, strict=True))])
        weight = moments[:, :1].clamp_min(2)
        s1, s2 = moments[:, 1 : 1 + f], moments[:, 1 + f :]
        std = ((s2 - s1**2 / weight) / (weight - 1)).clamp_min(0).sqrt()
        mean_abs = [(totals[:, 1:] / totals[:, :1].clamp_min(1))
                    .reshape(self.samples, self.outputs, f) for totals in models]
        return Resampled(std=std, mean_abs=mean_abs)

    def _weighted_sums(self, filled: torch.Tensor, sums: list[torch.Tensor]
                       ) -> list[torch.Tensor]:
        """float64 [samples, columns] per array of sums [filled buckets, columns]: the sum over
        the ``filled`` buckets (those that hold a row) of weight x the bucket's sums, a block
        of buckets at a time."""
        poisson = PoissonBootstrap(self.samples, self.seed)
        totals = [torch.zeros(self.samples, part.shape[1], dtype=torch.float64) for part in sums]
        step = max(1, WEIGHT_ELEMENTS // max(self.samples, 1))
        for start in range(0, len(filled), step):
            weights = poisson.weights(filled[start : start + step].numpy() + 1)
            for total, part in zip(totals, sums, strict=True):
                total += weights @ part[start : start + step]
        return totals
