"""Per-row explanations: each row's strongest drivers (examples.csv) and the rows to read first.

A row's *contribution* of feature j is how much of its score feature j accounts for, in score
units, measured from the baseline (audit.baseline, the features' means by default): for
per-unit methods (gradients) the local linear contribution gradient x (x_j - baseline_j), for
the others the attribution itself. It depends on the row's own values, so it answers "why did
this row get this score".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import torch

from sensaudit.results.audit_result import EXAMPLE_REASONS, Driver, ExampleRecord
from sensaudit.stats.accumulators import TopRows
from sensaudit.stats.row_sample import ContributionSample, RowSample

# The rows furthest from their label on the probability sigmoid(score), kept beside those
# furthest on the score itself: which list is "misscored" is known once every row is read.
ON_PROBABILITY = "misscored_on_probability"
MISSCORED_REASONS = ("misscored", ON_PROBABILITY)


@dataclass
class LabelScale:
    """Whether the labelled rows' scores are logits of a 0/1 label: every finite label is 0
    or 1 and some score is outside [0, 1]. Then a row's distance from its label is measured
    on sigmoid(score), in the label's units (|logit - label| would list a confident right
    answer, 265 for a label 1, as the worst). Merges by and/min/max."""

    binary: bool = True
    low: float = np.inf
    high: float = -np.inf

    def update(self, scores: torch.Tensor, labels: np.ndarray, finite: np.ndarray) -> None:
        known = finite & np.isfinite(labels)
        if not known.any():
            return
        y = labels[known]
        self.binary = self.binary and bool(((y == 0) | (y == 1)).all())
        s = scores.detach().to("cpu", torch.float64).numpy()[known]
        self.low, self.high = min(self.low, float(s.min())), max(self.high, float(s.max()))

    def merge(self, other: LabelScale) -> None:
        self.binary = self.binary and other.binary
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)

    @property
    def logits(self) -> bool:
        return self.binary and (self.low < 0 or self.high > 1)


def misscored_keys(scores: torch.Tensor, labels: np.ndarray) -> dict[str, torch.Tensor]:
    """float64 [rows, outputs] per misscored reason: |score - label|, and |sigmoid(score) -
    label| for 0/1 labels (NaN for any other label: no candidate on that list)."""
    y = torch.from_numpy(np.array(labels, np.float64))[:, None]
    s = scores.detach().to("cpu", torch.float64)
    binary = (y == 0) | (y == 1)
    on_probability = torch.where(binary, (torch.sigmoid(s) - y).abs(),
                                 torch.full_like(s, float("nan")))
    return {"misscored": (s - y).abs(), ON_PROBABILITY: on_probability}


class ExampleDrivers:
    """Streams chunks of per-row attributions into examples rows and bounded, mergeable
    selections of the rows worth reading, per output:

    - ``proxies``: rows where the declared proxies contribute most (the sum over the proxies
      of |contribution|), when proxies are declared;
    - ``misscored``: rows whose score is furthest from their label, when labels are given;
    - ``strongest``: without proxies, rows whose single strongest contribution is largest.

    Each keeps ``keep`` rows, ties to the lowest row number.
    """

    def __init__(self, features: Sequence[str], outputs: Sequence[str], *, top_k: int,
                 proxies: Sequence[str], keep: int, baseline: torch.Tensor, per_unit: bool,
                 scale: torch.Tensor | None = None):
        self.features = list(features)
        self.outputs = list(outputs)
        self.top_k = min(top_k, len(self.features))
        self.proxy_index = [self.features.index(p) for p in proxies if p in self.features]
        self.baseline = baseline.detach().to("cpu", torch.float64)  # [features]
        self.per_unit = per_unit
        reasons = ["proxies" if self.proxy_index else "strongest", *MISSCORED_REASONS]
        self.selections: dict[str, list[TopRows[ExampleRecord]]] = {
            reason: [TopRows(keep) for _ in self.outputs] for reason in reasons}
        # The charts' sample of per-row contributions, in score units (x the feature's std
        # for per-unit methods).
        self.scale = None if scale is None else scale.to(torch.float64)
        self.sample = RowSample()  # every feature's contribution in a uniform sample of rows
        self.label_scale = LabelScale()
        self._names = pa.array(self.features, type=pa.string())
        self._output_names = pa.array(self.outputs, type=pa.string())

    def add(self, rows: np.ndarray, ids: pa.Array | np.ndarray, labels: np.ndarray | None,
            scores: torch.Tensor, values: torch.Tensor, finite: torch.Tensor, x: torch.Tensor,
            *, table: bool, sample: bool = True) -> pa.Table | None:
        """One chunk: scores [rows, outputs], values [rows, outputs, features], finite [rows],
        x [rows, features] the rows' feature values. Returns its examples rows (one per row
        and output) when ``table`` is True; ``sample`` False: the rows are not offered to the
        charts' row sample (candidates chosen elsewhere, see example_candidates)."""
        n_rows, m, n = values.shape
        values = values.detach().cpu()
        scores = scores.detach().to("cpu", torch.float64)
        x = x.detach().to("cpu", torch.float64)
        diff = x - self.baseline  # [rows, features]
        # Drivers are chosen in the model's dtype (half the memory traffic of float64 for a
        # float32 model); only the top_k chosen are widened for the figures written.
        magnitude = (values * diff.to(values.dtype)[:, None, :] if self.per_unit
                     else values).abs()
        top = magnitude.nan_to_num(nan=-1.0).topk(self.top_k, dim=2).indices  # [rows, m, k]
        k = self.top_k
        chosen = values.gather(2, top).double()
        chosen_diff = diff[:, None, :].expand(n_rows, m, n).gather(2, top)
        contrib = chosen * chosen_diff if self.per_unit else chosen
        # Flattened to one entry per (row, output): entry i is row i // m, output i % m.
        drivers = _Drivers(index=top.reshape(n_rows * m, k).numpy(),
                           attribution=chosen.reshape(n_rows * m, k).numpy(),
                           contribution=contrib.reshape(n_rows * m, k).numpy(),
                           value=x[:, None, :].expand(n_rows, m, n).gather(2, top)
                           .reshape(n_rows * m, k).numpy())
        if labels is not None:
            self.label_scale.update(scores, np.asarray(labels, np.float64), finite.cpu().numpy())
        if any(s.keep for selection in self.selections.values() for s in selection):
            self._offer(rows, ids, labels, scores, values, x, finite, drivers)
        if sample:
            self._sample(rows, values, finite)
        if not table:
            return None
        repeat = np.repeat(np.arange(n_rows), m)
        columns: dict[str, pa.Array] = {
            "id": (ids.take(pa.array(repeat)) if isinstance(ids, pa.Array)
                   else pa.array(np.repeat(np.asarray(ids), m))),
            "output": self._output_names.take(pa.array(np.tile(np.arange(m), n_rows))),
            "score": pa.array(scores.reshape(-1).numpy()),
        }
        if labels is not None:
            columns["label"] = pa.array(np.repeat(labels, m), from_pandas=True)
        for j in range(k):
            columns[f"driver_{j + 1}"] = self._names.take(pa.array(drivers.index[:, j]))
            columns[f"value_{j + 1}"] = pa.array(drivers.value[:, j])
            if self.per_unit:
                columns[f"gradient_{j + 1}"] = pa.array(drivers.attribution[:, j])
            columns[f"contribution_{j + 1}"] = pa.array(drivers.contribution[:, j])
        return pa.table(columns)

    def _offer(self, rows: np.ndarray, ids: pa.Array | np.ndarray, labels: np.ndarray | None,
               scores: torch.Tensor, values: torch.Tensor, x: torch.Tensor,
               finite: torch.Tensor, drivers: _Drivers) -> None:
        m = values.shape[1]
        diff = x - self.baseline
        keys: dict[str, torch.Tensor] = {}  # per reason: [rows, outputs], NaN = not a candidate
        if self.proxy_index:  # in float64: few columns, and near-ties must order exactly
            proxies = values[:, :, self.proxy_index].double()
            if self.per_unit:
                proxies = proxies * diff[:, None, self.proxy_index]
            keys["proxies"] = proxies.abs().sum(2)
        else:  # the strongest driver's magnitude, chosen above
            keys["strongest"] = torch.from_numpy(np.abs(drivers.contribution[:, 0])).reshape(-1, m)
        if labels is not None:
            keys.update(misscored_keys(scores, labels))
        # Rows left out of the statistics as non-finite are not examples of what drives the
        # score: an infinite gradient would otherwise head the list.
        for reason, key in keys.items():
            key = torch.where(finite[:, None], key, torch.full_like(key, float("nan")))
            for output, kept in enumerate(self.selections[reason]):
                column = key[:, output]
                candidates = (~column.isnan()).nonzero().flatten()
                count = min(kept.keep, len(candidates))
                if not count:
                    continue
                # Every row tied with the count-th best is offered: which of them stay is
                # then decided by row number, as in any other chunking.
                threshold = column[candidates].topk(count).values[-1]
                for row in candidates[column[candidates] >= threshold].tolist():
                    value = float(column[row])
                    if kept.would_keep(value):
                        kept.offer(value, int(rows[row]), output,
                                   self._record(reason, row, output, value, ids, labels,
                                                scores, values, x, drivers))

    def _record(self, reason: str, row: int, output: int, value: float,
                ids: pa.Array | np.ndarray, labels: np.ndarray | None, scores: torch.Tensor,
                values: torch.Tensor, x: torch.Tensor,
                drivers: _Drivers) -> Callable[[], ExampleRecord]:
        m = scores.shape[1]
        i = row * m + output

        def driver(j: int) -> Driver:
            """Feature j's part in this row's score, computed in float64."""
            value, baseline = float(x[row, j]), float(self.baseline[j])
            attribution = float(values[row, output, j])
            return Driver(self.features[j], value, baseline, attribution,
                          attribution * (value - baseline) if self.per_unit else attribution)

        def record() -> ExampleRecord:
            label = None if labels is None else float(labels[row])
            return ExampleRecord(
                id=_plain(ids[row]), output=self.outputs[output], score=float(scores[row, output]),
                label=None if label is None or np.isnan(label) else label,
                drivers=[Driver(self.features[drivers.index[i, j]], float(drivers.value[i, j]),
                                float(self.baseline[drivers.index[i, j]]),
                                float(drivers.attribution[i, j]),
                                float(drivers.contribution[i, j]))
                         for j in range(self.top_k)],
                rank_value=value, reason=reason,
                # The declared proxies not among the top drivers, so that a row shown for its
                # proxies says what each proxy adds.
                proxies=[driver(j) for j in self.proxy_index
                         if j not in drivers.index[i].tolist()])

        return record

    def _sample(self, rows: np.ndarray, values: torch.Tensor, finite: torch.Tensor) -> None:
        """Offer the chunk's finite rows to the sample; only the rows it takes are widened
        and scaled. values: [rows, outputs, features]."""
        ok = finite.cpu().numpy()
        take = np.flatnonzero(ok & self.sample.wanted(rows))
        chosen = values[torch.from_numpy(take)].double()
        if self.scale is not None:
            chosen = chosen * self.scale
        self.sample.update(rows[take], chosen.numpy(), offered=int(ok.sum()))

    def merge(self, other: ExampleDrivers) -> None:
        for reason, selection in self.selections.items():
            for mine, theirs in zip(selection, other.selections[reason], strict=True):
                mine.merge(theirs)
        self.sample.merge(other.sample)
        self.label_scale.merge(other.label_scale)

    def contributions(self) -> ContributionSample:
        return self.sample.result(self.features, self.outputs)

    def best_first(self, outputs: Sequence[str] | None = None) -> list[ExampleRecord]:
        """Every kept row: by reason (proxies or strongest, then misscored), within it by
        output in the order given (default: the model's), best first."""
        order = [self.outputs.index(o) for o in outputs] if outputs else range(len(self.outputs))
        kept = {reason: [rows.best_first() for rows in selection]
                for reason, selection in self.selections.items()}
        if self.label_scale.logits:  # misscored in the label's units: on the probability
            kept["misscored"] = [[replace(r, reason="misscored") for r in rows]
                                 for rows in kept[ON_PROBABILITY]]
        return [record for reason in EXAMPLE_REASONS if reason in kept
                for o in order for record in kept[reason][o]]


class _Drivers:
    """One chunk's top_k drivers per (row, output) entry: numpy [rows x outputs, k] each."""

    def __init__(self, *, index: np.ndarray, attribution: np.ndarray, contribution: np.ndarray,
                 value: np.ndarray):
        self.index, self.attribution = index, attribution
        self.contribution, self.value = contribution, value


def _plain(value: object) -> object:
    """An Arrow or numpy scalar as a plain Python value."""
    if isinstance(value, pa.Scalar):
        return value.as_py()
    return value.item() if isinstance(value, np.generic) else value


def records_table(records: Sequence[ExampleRecord], *, with_label: bool,
                  per_unit: bool = True) -> pa.Table:
    """Examples rows, in the streamed rows' columns, for already selected rows (the strongest
    examples, best first): what ``report.examples: top`` writes."""
    k = max((len(r.drivers) for r in records), default=0)
    columns: dict[str, pa.Array] = {
        "id": pa.array([r.id for r in records]),
        "output": pa.array([r.output for r in records], type=pa.string()),
        "score": pa.array([r.score for r in records], type=pa.float64()),
    }
    if with_label:
        columns["label"] = pa.array([r.label for r in records], type=pa.float64())
    for j in range(k):
        columns[f"driver_{j + 1}"] = pa.array([r.drivers[j].feature for r in records],
                                              type=pa.string())
        columns[f"value_{j + 1}"] = pa.array([r.drivers[j].value for r in records],
                                             type=pa.float64())
        if per_unit:
            columns[f"gradient_{j + 1}"] = pa.array([r.drivers[j].attribution for r in records],
                                                    type=pa.float64())
        columns[f"contribution_{j + 1}"] = pa.array([r.drivers[j].contribution
                                                     for r in records], type=pa.float64())
    return pa.table(columns)
