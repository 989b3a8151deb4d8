"""The report's example rows chosen during the read pass, without keeping every row.

A row's contribution of feature j, ``g_j * (x_j - b_j)``, depends on the baseline ``b`` (the
features' means by default), which is final only once every row is read. Rather than keep every
row's attributions until then (:mod:`sensaudit.pipeline.spill`), the read pass ranks rows against a
*provisional* baseline ``b'`` (the running means) and keeps, per kind of example and output, the
best ``keep * 4 + 32`` candidates with their attributions and values. How far a row's key can
move once ``b`` is final is bounded: for the strongest contribution,
``|key(b) - key(b')| <= max_j |g_j| * max_j |b_j - b'_j|`` (for the proxies' sum, the sum of the
proxies' |g| times their largest move). At the end the candidates are ranked again with the final
baseline by :class:`~sensaudit.pipeline.examples.ExampleDrivers` itself (the same code as the
replay, so the same figures), and the selection is *certified*: every row left out could at best
reach ``key' + G * D`` (kept per chunk as the largest key' and the largest G among its rows left
out), and when that is below the worst row kept, no row left out could have made the list. When it
is not (near-ties at the boundary, a baseline that moved a lot), :func:`certify` says so and the
pipeline recomputes the selection exactly over the data (a second pass): never a guess.

Misscored rows (|score - label|, and |sigmoid(score) - label| for a 0/1 label, which is shown
when the scores are logits: :class:`~sensaudit.pipeline.examples.LabelScale`) do not depend on the
baseline, so their selection is exact here.
The charts' row sample (:class:`~sensaudit.stats.row_sample.RowSample`) is chosen by row number, so
it is taken here too, unscaled, and scaled by the final standard deviations at the end.

Like every accumulator, candidates of several parts of the rows merge (:meth:`merge`) into the
choice a single pass would settle on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from sensaudit.pipeline.examples import (
    MISSCORED_REASONS,
    ExampleDrivers,
    LabelScale,
    misscored_keys,
)
from sensaudit.stats.row_sample import RowSample
from sensaudit.stats.scratch import reused

# Float rounding of a provisional key, relative, in units of its dtype's epsilon (the key is a
# product and a maximum, a few roundings at most); never below 1e-5.
_EPSILONS = 16


def candidates_kept(keep: int) -> int:
    """Candidates per kind and output for ``keep`` shown rows: enough that the rows left out
    are, in practice, clearly below the last one shown."""
    return 0 if keep == 0 else keep * 4 + 32


@dataclass
class _Rows:
    """Candidate rows of one chunk: row numbers, ids, labels, scores, attributions, values."""

    rows: np.ndarray
    ids: pa.Array | np.ndarray
    labels: np.ndarray | None
    scores: torch.Tensor
    values: torch.Tensor
    x: torch.Tensor


@dataclass
class _Buffer:
    """The best candidates of one (kind, output), ordered by (key desc, row asc)."""

    size: int
    key: np.ndarray = field(default_factory=lambda: np.empty(0))
    bound: np.ndarray = field(default_factory=lambda: np.empty(0))  # G: how fast key moves
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    chunk: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def offer(self, chunk: int, rows: np.ndarray, key: np.ndarray, bound: np.ndarray,
              left_out: dict[int, tuple[float, float]]) -> np.ndarray:
        """Offer one chunk's rows (key NaN: not a candidate); returns the positions of the
        chunk's rows now kept. Rows that drop out are summed into ``left_out`` per chunk as
        (largest key, largest bound)."""
        candidates = np.flatnonzero(~np.isnan(key))
        if len(candidates) > self.size:  # only rows at or above the size-th key can stay
            threshold = np.partition(key[candidates], len(candidates) - self.size)[
                len(candidates) - self.size]
            is_above = key[candidates] >= threshold
            _leave_out(left_out, chunk, key, bound, candidates[~is_above])
            candidates = candidates[is_above]
        all_key = np.concatenate([self.key, key[candidates]])
        all_bound = np.concatenate([self.bound, bound[candidates]])
        all_rows = np.concatenate([self.rows, rows[candidates]])
        all_chunk = np.concatenate([self.chunk, np.full(len(candidates), chunk)])
        order = np.lexsort((all_rows, -all_key))
        kept, dropped = order[: self.size], order[self.size:]
        for c in np.unique(all_chunk[dropped]):
            mine = dropped[all_chunk[dropped] == c]
            _leave_out(left_out, int(c), all_key, all_bound, mine)
        self.key, self.bound = all_key[kept], all_bound[kept]
        self.rows, self.chunk = all_rows[kept], all_chunk[kept]
        return candidates[np.isin(rows[candidates], self.rows[self.chunk == chunk])]

    def merge(self, other: _Buffer, offset: int,
              left_out: dict[int, tuple[float, float]]) -> None:
        """Take ``other``'s candidates (its chunks numbered from ``offset`` here); the ones
        that no longer fit are left out as in :meth:`offer`."""
        key = np.concatenate([self.key, other.key])
        bound = np.concatenate([self.bound, other.bound])
        rows = np.concatenate([self.rows, other.rows])
        chunk = np.concatenate([self.chunk, other.chunk + offset])
        order = np.lexsort((rows, -key))
        kept, dropped = order[: self.size], order[self.size:]
        for c in np.unique(chunk[dropped]):
            _leave_out(left_out, int(c), key, bound, dropped[chunk[dropped] == c])
        self.key, self.bound, self.rows, self.chunk = key[kept], bound[kept], rows[kept], \
            chunk[kept]


def _largest_magnitude(x: torch.Tensor) -> float:
    """max |x| over every element (0.0 for none; NaN propagates)."""
    if not x.numel():
        return 0.0
    low, high = torch.aminmax(x)
    return float(torch.maximum(-low, high))


def _leave_out(left_out: dict[int, tuple[float, float]], chunk: int, key: np.ndarray,
               bound: np.ndarray, positions: np.ndarray) -> None:
    if not len(positions):
        return
    best_key, best_bound = left_out.get(chunk, (-math.inf, 0.0))
    left_out[chunk] = (max(best_key, float(key[positions].max())),
                       max(best_bound, float(bound[positions].max())))


class ExampleCandidates:
    """One model's candidate example rows over the read pass (see the module docstring).

    ``update`` per chunk with the baseline as it stands; :meth:`settle` offers the candidates
    to the final :class:`ExampleDrivers` and says whether the selection is certified exact.
    """

    def __init__(self, n_outputs: int, proxy_index: list[int], *, keep: int, per_unit: bool,
                 sample_keep: int | None = None):
        self.n_outputs = n_outputs
        self.proxy_index = proxy_index
        self.per_unit = per_unit
        self.primary = "proxies" if proxy_index else "strongest"
        size = candidates_kept(keep)
        self.buffers = {reason: [_Buffer(size) for _ in range(n_outputs)]
                        for reason in (self.primary, *MISSCORED_REASONS)}
        self.left_out: dict[str, list[dict[int, tuple[float, float]]]] = {
            reason: [{} for _ in range(n_outputs)] for reason in self.buffers}
        self.baselines: list[torch.Tensor] = []  # the provisional baseline of each chunk
        # Per chunk: how far the provisional keys may sit from exact arithmetic with that
        # baseline (absolute, per unit of |gradient|), and relative.
        self.rounding: list[tuple[float, float]] = []
        self.kept: dict[int, _Rows] = {}  # chunk -> its rows that are (or were) candidates
        self.sample = RowSample() if sample_keep is None else RowSample(sample_keep)
        self.label_scale = LabelScale()  # over every row read (drivers see only candidates)

    def update(self, rows: np.ndarray, ids: pa.Array | np.ndarray, labels: np.ndarray | None,
               scores: torch.Tensor, values: torch.Tensor, finite: torch.Tensor,
               x: torch.Tensor, baseline: torch.Tensor) -> None:
        """One chunk: scores [rows, outputs], values [rows, outputs, features], finite [rows],
        x [rows, features] as read, baseline float64 [features] the provisional one."""
        chunk = len(self.baselines)
        values = values.detach().cpu()
        x = x.detach().cpu()
        ok = finite.cpu().numpy()
        if labels is not None:
            self.label_scale.update(scores, np.asarray(labels, np.float64), ok)
        self._sample(rows, values, ok)
        keys = self._keys(values, scores.detach().to("cpu", torch.float64), x, labels,
                          baseline.detach().to("cpu", torch.float64))
        taken: list[np.ndarray] = []
        for reason, (key, bound) in keys.items():
            key[~ok] = np.nan  # rows left out of the statistics are never examples
            for output, buffer in enumerate(self.buffers[reason]):
                if buffer.size:
                    taken.append(buffer.offer(chunk, rows, key[:, output], bound[:, output],
                                              self.left_out[reason][output]))
        positions = np.unique(np.concatenate(taken)) if taken else np.empty(0, dtype=np.int64)
        if len(positions):
            index = torch.from_numpy(positions)
            self.kept[chunk] = _Rows(
                rows=rows[positions],
                ids=(ids.take(pa.array(positions)) if isinstance(ids, pa.Array)
                     else np.asarray(ids)[positions]),
                labels=None if labels is None else np.asarray(labels)[positions],
                scores=scores.detach().cpu()[index].clone(), values=values[index].clone(),
                x=x.detach().cpu()[index].clone())
        self._forget()

    def merge(self, other: ExampleCandidates) -> None:
        """Combine the candidates of another part of the rows (another worker's): the result
        settles as a single pass over both parts would (tests/test_example_candidates.py)."""
        offset = len(self.baselines)
        self.baselines += other.baselines
        self.rounding += other.rounding
        self.kept.update({chunk + offset: rows for chunk, rows in other.kept.items()})
        for reason, buffers in self.buffers.items():
            for output, buffer in enumerate(buffers):
                left_out = self.left_out[reason][output]
                for chunk, (key, bound) in other.left_out[reason][output].items():
                    left_out[chunk + offset] = (key, bound)
                buffer.merge(other.buffers[reason][output], offset, left_out)
        self.sample.merge(other.sample)
        self.label_scale.merge(other.label_scale)
        self._forget()

    def _keys(self, values: torch.Tensor, scores: torch.Tensor, x: torch.Tensor,
              labels: np.ndarray | None, baseline: torch.Tensor
              ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per kind: the provisional key and its bound G, float64 [rows, outputs] each."""
        keys: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.primary == "proxies":  # as ExampleDrivers ranks them: in float64 (few columns)
            self.baselines.append(baseline.clone())
            self.rounding.append((0.0, 1e-12))
            proxies = values[:, :, self.proxy_index].double()
            if self.per_unit:
                diff = x[:, self.proxy_index].double() - baseline[self.proxy_index]
                key = (proxies * diff[:, None, :]).abs().sum(2)
                bound = proxies.abs().sum(2)
            else:
                key, bound = proxies.abs().sum(2), torch.zeros(proxies.shape[:2])
        else:
            # The strongest contribution in the values' own dtype (every feature of every row:
            # the widest work here, so no widened copies). max |v| from amax and amin: the same
            # figure as an inf-norm, at a sixth of its time on CPU; |x|'s largest likewise.
            # The baseline used is the one rounded to that dtype, and the rounding of x - b
            # (at most eps * (|x| + |b|), twice over when x is narrowed) is added to the bound.
            narrow = baseline.to(values.dtype)
            self.baselines.append(narrow.double())
            eps = torch.finfo(values.dtype).eps
            reach = _largest_magnitude(x)
            self.rounding.append((eps * (2 * reach + float(narrow.double().abs().max())),
                                  max(1e-5, _EPSILONS * eps)))
            # Formed in reused memory (fresh chunk-sized blocks cost more in page faults than
            # the arithmetic); max |v| as max(max v, -min v), without forming |v|.
            largest = torch.maximum(values.amax(2), values.amin(2).neg_())
            if self.per_unit:
                diff = reused(tuple(x.shape), values.dtype, slot="candidates.diff")
                diff.copy_(x).sub_(narrow)  # x.to(values.dtype) - narrow
                product = reused(tuple(values.shape), values.dtype, slot="candidates.product")
                key = torch.mul(values, diff[:, None, :], out=product).abs_().amax(2)
                bound = largest
            else:
                key = largest
                bound = torch.zeros(values.shape[:2])
        keys[self.primary] = (key.double().numpy().copy(), bound.double().numpy())
        if labels is not None:
            for reason, key in misscored_keys(scores, labels).items():
                keys[reason] = (key.numpy().copy(), np.zeros(key.shape))
        return keys

    def _sample(self, rows: np.ndarray, values: torch.Tensor, ok: np.ndarray) -> None:
        # As ExampleDrivers._sample, unscaled: the stds are not final yet.
        take = np.flatnonzero(self.sample.wanted(rows, among=ok))
        self.sample.update(rows[take], values[torch.from_numpy(take)].double().numpy(),
                           offered=int(ok.sum()))

    def _forget(self) -> None:
        """Drop kept rows no buffer holds any more (memory stays bounded)."""
        held: dict[int, set[int]] = {}
        for buffers in self.buffers.values():
            for buffer in buffers:
                for c, row in zip(buffer.chunk.tolist(), buffer.rows.tolist(), strict=True):
                    held.setdefault(c, set()).add(row)
        for chunk in list(self.kept):
            rows = held.get(chunk)
            if not rows:
                del self.kept[chunk]
                continue
            part = self.kept[chunk]
            if len(rows) < len(part.rows):
                keep = np.flatnonzero(np.isin(part.rows, list(rows)))
                index = torch.from_numpy(keep)
                self.kept[chunk] = _Rows(
                    rows=part.rows[keep],
                    ids=(part.ids.take(pa.array(keep)) if isinstance(part.ids, pa.Array)
                         else np.asarray(part.ids)[keep]),
                    labels=None if part.labels is None else part.labels[keep],
                    scores=part.scores[index], values=part.values[index], x=part.x[index])

    def settle(self, drivers: ExampleDrivers, scale: torch.Tensor | None) -> bool:
        """Offer every candidate to ``drivers`` (built with the final baseline) and hand it the
        row sample, scaled by ``scale``. True when the selection is certified to be the one a
        pass over every row with the final baseline would make."""
        for part in sorted(self.kept.items()):
            rows = part[1]
            finite = torch.ones(len(rows.rows), dtype=torch.bool)
            drivers.add(rows.rows, rows.ids, rows.labels, rows.scores, rows.values, finite,
                        rows.x, table=False, sample=False)
        sample = self.sample
        if scale is not None and sample.values is not None:
            sample.values = sample.values * scale.to(torch.float64).numpy()
        drivers.sample = sample
        drivers.label_scale = LabelScale(self.label_scale.binary, self.label_scale.low,
                                         self.label_scale.high)
        return self.certified(drivers)

    def certified(self, drivers: ExampleDrivers) -> bool:
        final = drivers.baseline
        for reason, per_output in self.left_out.items():
            for output, left_out in enumerate(per_output):
                if not left_out:
                    continue  # every candidate row was kept and offered
                kept = drivers.selections[reason][output]
                if len(kept._heap) < kept.keep:
                    return False  # rows were left out, yet fewer than keep were shown
                worst = kept._heap[0].value
                if self._reach(reason, left_out, final) >= worst:
                    return False
        return True

    def _reach(self, reason: str, left_out: dict[int, tuple[float, float]],
               final: torch.Tensor) -> np.float32:
        """The highest key any row left out could have under the final baseline."""
        features = self.proxy_index if reason == "proxies" else slice(None)
        reach = -math.inf
        for chunk, (key, bound) in left_out.items():
            rounding, relative = self.rounding[chunk]
            moved = 0.0
            if reason not in MISSCORED_REASONS and self.per_unit:
                moved = float((final[features] - self.baselines[chunk][features]).abs().max())
                moved += rounding
            reach = max(reach, (key + bound * moved) * (1 + relative))
        highest: np.float32 = reach + np.finfo(np.float32).tiny * 1e3
        return highest
