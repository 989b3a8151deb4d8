"""Mergeable accumulators: ``update(chunk)``, ``merge(other)``, exact under any partition.

Every statistic the audit reports is a sum over rows (or a bounded selection of rows), so the
rows can be split across chunks, threads or workers in any way and merged afterwards with the
same answer, up to float64 rounding. Rows are named by the data (their row number in the file),
never by a counter, so the tie-breaks of the bounded selections and the bootstrap weights are
the same wherever a row is processed.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from sensaudit.stats.scratch import widened

NONFINITE_IDS_KEPT = 20


class FeatureMoments:
    """Exact count, mean and sum of squared deviations per feature (float64), merged by Chan
    et al.'s pairwise formula.

    Integer columns too large for float64 to hold exactly (beyond 2**53: ids, nanosecond
    timestamps near 2**62) arrive as ``exact`` int64 values; their moments are taken about an
    integer ``shift`` (a value of the column), so a spread of a few units around 2**62 is
    measured exactly instead of vanishing when the values are rounded to float64.
    """

    def __init__(self, n_features: int):
        self.count = 0
        self.shift = torch.zeros(n_features, dtype=torch.int64)
        self.centred = torch.zeros(n_features, dtype=torch.float64)  # the mean - shift
        self.m2 = torch.zeros(n_features, dtype=torch.float64)

    @property
    def mean(self) -> torch.Tensor:
        return self.shift.to(torch.float64) + self.centred

    def update(self, x: torch.Tensor, exact: dict[int, np.ndarray] | None = None) -> None:
        """x: float [rows, features]; exact: column -> its int64 values [rows], for integer
        columns float64 rounds."""
        rows = x.shape[0]
        if rows == 0:
            return
        # Widened into reused memory and centred and squared there in place: the same
        # arithmetic as ((x - mean) ** 2).sum(0) on a fresh float64 copy, bit for bit.
        x = widened(x.detach().cpu())
        shift = torch.zeros_like(self.shift)
        if exact:
            for j, values in exact.items():
                first = int(values[0])
                if int(values.max()) - int(values.min()) >= 2**62:
                    continue  # a spread this wide: float64's rounding of it is negligible
                shift[j] = first
                x[:, j] = torch.from_numpy((values - np.int64(first)).astype(np.float64))
        chunk_mean = x.mean(0)
        x.sub_(chunk_mean).square_()
        self._combine(rows, chunk_mean, x.sum(0), shift)

    def merge(self, other: FeatureMoments) -> None:
        if other.count:
            self._combine(other.count, other.centred, other.m2, other.shift)

    def _combine(self, rows: int, centred: torch.Tensor, m2: torch.Tensor,
                 shift: torch.Tensor) -> None:
        if self.count == 0:
            self.shift = shift.clone()
        elif bool((shift != self.shift).any()):
            # The other part's mean about this one's shift: the shifts' difference is exact in
            # int64 when they have the same sign (no overflow), else float64 is precise enough.
            same = (shift >= 0) == (self.shift >= 0)
            gap = torch.where(same, (shift - self.shift).to(torch.float64),
                              shift.to(torch.float64) - self.shift.to(torch.float64))
            centred = centred + gap
        total = self.count + rows
        delta = centred - self.centred
        self.centred = self.centred + delta * (rows / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * rows / total)
        self.count = total

    @property
    def std(self) -> torch.Tensor:
        """Sample standard deviation (ddof=1) per feature."""
        if self.count < 2:
            return torch.full_like(self.mean, float("nan"))
        return (self.m2 / (self.count - 1)).sqrt()


def finite_rows(scores: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """bool [rows]: rows whose scores [rows, outputs] and attributions [rows, outputs,
    features] are all finite."""
    # Fast path: a row's sum is finite only if every element is (NaN and inf propagate), so
    # one reduction clears almost every row; only rows whose sum is not finite (a NaN or inf,
    # or finite values overflowing the sum) are checked element by element.
    row_sums = values.flatten(1).sum(1) + scores.sum(1)
    finite = torch.isfinite(row_sums)
    if bool(finite.all()):
        return finite
    suspects = (~finite).nonzero().flatten()
    finite[suspects] = (torch.isfinite(values[suspects]).flatten(1).all(1)
                        & torch.isfinite(scores[suspects]).all(1))
    return finite


class AttributionSums:
    """Per (output, feature) sums of attributions, their absolute values and squares, and the
    score sums, over the rows with finite results; rows with NaN/inf are counted and the first
    few (by row number) named."""

    def __init__(self, n_outputs: int, n_features: int):
        shape = (n_outputs, n_features)
        self.rows = 0
        self.sum = torch.zeros(shape, dtype=torch.float64)
        self.sum_abs = torch.zeros(shape, dtype=torch.float64)
        self.sum_sq = torch.zeros(shape, dtype=torch.float64)
        self.score_sum = torch.zeros(n_outputs, dtype=torch.float64)
        self.nonfinite_rows = 0
        self._nonfinite: list[tuple[int, object]] = []  # (row number, id), the lowest rows

    def update(self, rows: np.ndarray, ids: Sequence[object], scores: torch.Tensor,
               values: torch.Tensor, finite: torch.Tensor | None = None) -> None:
        """rows: int [rows] row numbers; scores: [rows, outputs]; values: [rows, outputs,
        features], in any float dtype (summed in float64)."""
        if finite is None:
            finite = finite_rows(scores, values)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten().cpu().tolist()
            self.nonfinite_rows += len(bad)
            self._keep_nonfinite((int(rows[i]), as_python(arrow_as_python(ids[i]))) for i in bad)
            values, scores = values[finite], scores[finite]
        # Reduced where the values are (a GPU keeps its Jacobian; only the [outputs, features]
        # sums travel), in float64: one widened copy in reused memory serves the three sums,
        # made absolute and then squared in place (|v|**2 is v**2 exactly), and squares are
        # formed in float64 so they lose nothing.
        good = widened(values)
        self.rows += good.shape[0]
        self.sum += good.sum(0).cpu()
        self.sum_abs += good.abs_().sum(0).cpu()
        self.sum_sq += good.square_().sum(0).cpu()
        self.score_sum += scores.detach().sum(0, dtype=torch.float64).cpu()

    def merge(self, other: AttributionSums) -> None:
        self.rows += other.rows
        self.sum += other.sum
        self.sum_abs += other.sum_abs
        self.sum_sq += other.sum_sq
        self.score_sum += other.score_sum
        self.nonfinite_rows += other.nonfinite_rows
        self._keep_nonfinite(other._nonfinite)

    def _keep_nonfinite(self, found: Iterable[tuple[int, object]]) -> None:
        self._nonfinite = sorted([*self._nonfinite, *found],
                                 key=lambda t: t[0])[:NONFINITE_IDS_KEPT]

    @property
    def nonfinite_ids(self) -> list[object]:
        return [row_id for _, row_id in self._nonfinite]


def as_python(value: object) -> object:
    """numpy scalars as plain Python values, for messages and JSON."""
    return value.item() if isinstance(value, np.generic) else value


T = TypeVar("T")


@dataclass(order=True)
class _Ranked(Generic[T]):
    # Heap order: the worst kept item first. Higher value is better; for equal values the
    # lower (row, output) is better, so ties resolve by the data, not by arrival order.
    value: float
    neg_row: int
    neg_output: int
    item: T = field(compare=False)

    @property
    def key(self) -> tuple[float, int, int]:
        return (self.value, self.neg_row, self.neg_output)


class TopRows(Generic[T]):
    """The ``keep`` items with the largest value, ties going to the lowest (row, output)."""

    def __init__(self, keep: int):
        self.keep = keep
        self._heap: list[_Ranked[T]] = []

    def offer(self, value: float, row: int, output: int, make: Callable[[], T]) -> None:
        """Consider one (row, output); ``make`` builds the item only if it is kept."""
        if self.keep == 0 or math.isnan(value):
            return
        worst = self._heap[0] if len(self._heap) == self.keep else None
        if worst is not None and not (value, -row, -output) > worst.key:
            return
        self._push(_Ranked(value, -row, -output, make()))

    def would_keep(self, value: float) -> bool:
        """False when a value this small cannot enter (a cheap filter before ``offer``)."""
        return len(self._heap) < self.keep or value >= self._heap[0].value

    def _push(self, ranked: _Ranked[T]) -> None:
        if len(self._heap) < self.keep:
            heapq.heappush(self._heap, ranked)
        elif ranked > self._heap[0]:
            heapq.heapreplace(self._heap, ranked)

    def merge(self, other: TopRows[T]) -> None:
        for ranked in other._heap:
            self._push(ranked)

    def best_first(self) -> list[T]:
        return [r.item for r in sorted(self._heap, reverse=True)]


# --- the paired Poisson bootstrap of `compare` --------------------------------------------------

# Poisson(1) cumulative probabilities: P(K <= k) for k = 0..15 (enough: P(K > 15) < 1e-13).
_POISSON1_CDF = np.cumsum([math.exp(-1) / math.factorial(k) for k in range(16)])
_POISSON1_THRESHOLDS = np.floor(_POISSON1_CDF * 2.0**53).astype(np.uint64)


def splitmix64(z: np.ndarray) -> np.ndarray:
    # A counter-based hash (Steele et al.'s SplitMix64 finaliser): numpy uint64 arithmetic wraps.
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed: np.ndarray = z ^ (z >> np.uint64(31))
    return mixed


class PoissonBootstrap:
    """Poisson(1) row weights per replicate, a pure function of (seed, replicate, row)."""

    def __init__(self, samples: int, seed: int):
        self.samples = samples
        self.seed = seed

    def weights(self, rows: np.ndarray) -> torch.Tensor:
        """float64 [samples, len(rows)] weights for the given 1-based row numbers."""
        if self.samples == 0:
            return torch.zeros(0, len(rows), dtype=torch.float64)
        with np.errstate(over="ignore"):
            replicate = np.arange(self.samples, dtype=np.uint64)[:, None]
            key = (np.uint64(self.seed) * np.uint64(0x100000001B3)) ^ (replicate << np.uint64(40))
            z = splitmix64(key + np.asarray(rows, dtype=np.uint64)[None, :])
        # The Poisson(1) draw is the first k with P(K <= k) >= u, u = (z >> 11) / 2**53;
        # compared as integers, u <= p exactly when (z >> 11) <= floor(p * 2**53): the same
        # draws without converting every 53-bit integer to a float.
        draws = np.searchsorted(_POISSON1_THRESHOLDS, z >> np.uint64(11))
        return torch.from_numpy(draws.astype(np.float64))


# --- per-row agreement of two models (`compare`) ------------------------------------------------

COSINE_BINS = 2000  # histogram resolution for the cosine quantiles: 0.001


@dataclass
class RowChange:
    id: object
    output: int  # the output's index; named in AgreementAccumulator.summary
    score_old: float
    score_new: float
    cosine: float


class AgreementAccumulator:
    """Per-row agreement of two models (cosine of their contribution vectors) and score moves,
    per output: sums, a cosine histogram for quantiles, and the rows that disagree or moved
    most (bounded, ties to the lower row number)."""

    def __init__(self, n_outputs: int, keep: int = 10):
        m = n_outputs
        self.keep = keep
        self.rows = 0
        self.cosine_sum = np.zeros(m)
        self.histogram = np.zeros((m, COSINE_BINS), dtype=np.int64)
        self.delta_sum = np.zeros(m)
        self.abs_delta_sum = np.zeros(m)
        self.max_abs_delta = np.zeros(m)
        self.least_agreeing: list[TopRows[RowChange]] = [TopRows(keep) for _ in range(m)]
        self.most_moved: list[TopRows[RowChange]] = [TopRows(keep) for _ in range(m)]

    def update(self, rows: np.ndarray, ids: Any, scores_old: torch.Tensor,
               scores_new: torch.Tensor, contrib_old: torch.Tensor, contrib_new: torch.Tensor,
               finite: torch.Tensor) -> None:
        """rows: int [rows]; scores: [rows, outputs]; contrib: [rows, outputs, features]
        (attribution in score units); finite: bool [rows], the rows both models scored with
        finite values."""
        kept = finite.nonzero().flatten()
        so, sn = scores_old[kept].double(), scores_new[kept].double()
        co, cn = contrib_old[kept].double(), contrib_new[kept].double()
        norm_old, norm_new = co.norm(dim=2), cn.norm(dim=2)
        dot = (co * cn).sum(2)
        # Both vectors zero: the models agree (neither responds); one zero: no agreement.
        cosine = torch.where((norm_old > 0) & (norm_new > 0),
                             dot / (norm_old * norm_new).clamp_min(1e-300),
                             torch.where((norm_old == 0) & (norm_new == 0), 1.0, 0.0))
        cosine = cosine.clamp(-1, 1)  # [rows, outputs]
        delta = sn - so
        self.rows += cosine.shape[0]
        self.cosine_sum += cosine.sum(0).numpy()
        self.delta_sum += delta.sum(0).numpy()
        self.abs_delta_sum += delta.abs().sum(0).numpy()
        if cosine.shape[0]:
            self.max_abs_delta = np.maximum(self.max_abs_delta, delta.abs().amax(0).numpy())
        bins = ((cosine + 1) / 2 * COSINE_BINS).long().clamp(0, COSINE_BINS - 1)
        k = min(self.keep, cosine.shape[0])
        for o in range(cosine.shape[1]):
            self.histogram[o] += np.bincount(bins[:, o].numpy(), minlength=COSINE_BINS)
            if k == 0:
                continue
            # Only this chunk's own top candidates can enter the kept lists: no row loop.
            candidates = set(cosine[:, o].topk(k, largest=False).indices.tolist())
            candidates |= set(delta[:, o].abs().topk(k).indices.tolist())
            for r in sorted(candidates):
                row = int(kept[r])
                change = RowChange(id=as_python(arrow_as_python(ids[row])), output=o,
                                   score_old=float(so[r, o]), score_new=float(sn[r, o]),
                                   cosine=float(cosine[r, o]))
                self.least_agreeing[o].offer(-change.cosine, int(rows[row]), o,
                                             functools.partial(_same, change))
                self.most_moved[o].offer(abs(change.score_new - change.score_old),
                                         int(rows[row]), o, functools.partial(_same, change))

    def merge(self, other: AgreementAccumulator) -> None:
        self.rows += other.rows
        self.cosine_sum += other.cosine_sum
        self.histogram += other.histogram
        self.delta_sum += other.delta_sum
        self.abs_delta_sum += other.abs_delta_sum
        self.max_abs_delta = np.maximum(self.max_abs_delta, other.max_abs_delta)
        for mine, theirs in zip(self.least_agreeing + self.most_moved,
                                other.least_agreeing + other.most_moved, strict=True):
            mine.merge(theirs)

    def cosine_quantile(self, output: int, q: float) -> float:
        """Quantile of one output's per-row cosines, to the histogram's 0.001 resolution."""
        if self.rows == 0:
            return float("nan")
        cumulative = np.cumsum(self.histogram[output])
        index = int(np.searchsorted(cumulative, q * self.rows, side="left"))
        return -1 + (min(index, COSINE_BINS - 1) + 0.5) * 2 / COSINE_BINS

    def summary(self, output: int, name: str) -> dict[str, Any]:
        """The agreement figures comparison.json reports for output number ``output``."""
        rows = max(self.rows, 1)
        quantiles = (("p05", 0.05), ("p25", 0.25), ("median", 0.5), ("p75", 0.75),
                     ("p95", 0.95))
        return {
            "cosine": {"mean": float(self.cosine_sum[output]) / rows,
                       **{k: self.cosine_quantile(output, q) for k, q in quantiles}},
            "score_change": {"mean": float(self.delta_sum[output]) / rows,
                             "mean_abs": float(self.abs_delta_sum[output]) / rows,
                             "max_abs": float(self.max_abs_delta[output])},
            "least_agreeing_rows": [{**vars(c), "output": name}
                                    for c in self.least_agreeing[output].best_first()],
            "most_moved_rows": [{**vars(c), "output": name}
                                for c in self.most_moved[output].best_first()],
        }


def _same(change: RowChange) -> RowChange:
    return change


def arrow_as_python(value: object) -> object:
    """An Arrow scalar as its Python value (other values as they are)."""
    as_py = getattr(value, "as_py", None)
    return as_py() if callable(as_py) else value
