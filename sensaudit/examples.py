"""Per-row explanations: each row's strongest drivers (examples.csv) and the rows to read first.

A row's *contribution* of feature j is its attribution scaled into score units: gradient x
the feature's std for per-unit methods, the attribution itself otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch

from .results import ExampleRecord
from .row_sample import ContributionSample, RowSample
from .stats import TopRows


class ExampleDrivers:
    """Streams chunks of per-row attributions into examples rows and a bounded, mergeable
    selection of the strongest examples.

    Rows where the declared proxies move the score most are the ones to read first; without
    proxies, rows whose single strongest driver is largest.
    """

    def __init__(self, features: Sequence[str], outputs: Sequence[str], *, top_k: int,
                 proxies: Sequence[str], keep: int, scale: torch.Tensor | None):
        self.features = list(features)
        self.outputs = list(outputs)
        self.top_k = min(top_k, len(self.features))
        self.proxy_index = [self.features.index(p) for p in proxies if p in self.features]
        self.scale = None if scale is None else scale.to(torch.float64)
        self.strongest: TopRows[ExampleRecord] = TopRows(keep)
        self.sample = RowSample()  # every feature's contribution in a uniform sample of rows
        self._names = pa.array(self.features, type=pa.string())
        self._output_names = pa.array(self.outputs, type=pa.string())

    def add(self, rows: np.ndarray, ids: pa.Array | np.ndarray, labels: np.ndarray | None,
            scores: torch.Tensor, values: torch.Tensor, finite: torch.Tensor, *,
            table: bool) -> pa.Table | None:
        """One chunk: scores [rows, outputs], values [rows, outputs, features], finite [rows].
        Returns its examples rows (one per row and output) when ``table`` is True."""
        n_rows, m, n = values.shape
        values = values.detach().cpu()
        scores = scores.detach().to("cpu", torch.float64)
        # Drivers are chosen in the model's dtype (half the memory traffic of float64 for a
        # float32 model); only the top_k chosen are widened for the figures written.
        scale = None if self.scale is None else self.scale.to(values.dtype)
        magnitude = (values * scale if scale is not None else values).abs()
        top = magnitude.nan_to_num(nan=-1.0).topk(self.top_k, dim=2).indices
        # Flattened to one entry per (row, output): entry i is row i // m, output i % m.
        k = self.top_k
        index = top.reshape(n_rows * m, k).numpy()
        chosen = values.gather(2, top).double()
        gradient = chosen.reshape(n_rows * m, k).numpy()
        contrib = (chosen * self.scale[top] if self.scale is not None else chosen
                   ).reshape(n_rows * m, k).numpy()
        if self.strongest.keep:
            self._offer(rows, ids, labels, scores, values, finite, index, gradient, contrib)
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
            columns[f"driver_{j + 1}"] = self._names.take(pa.array(index[:, j]))
            columns[f"gradient_{j + 1}"] = pa.array(gradient[:, j])
            columns[f"contribution_{j + 1}"] = pa.array(contrib[:, j])
        return pa.table(columns)

    def _offer(self, rows: np.ndarray, ids: pa.Array | np.ndarray, labels: np.ndarray | None,
               scores: torch.Tensor, values: torch.Tensor, finite: torch.Tensor,
               index: np.ndarray, gradient: np.ndarray, contrib: np.ndarray) -> None:
        m = values.shape[1]
        if self.proxy_index:  # in float64: few columns, and near-ties must order exactly
            proxies = values[:, :, self.proxy_index].double()
            if self.scale is not None:
                proxies = proxies * self.scale[self.proxy_index]
            key = proxies.abs().sum(2)
        else:  # the strongest driver's magnitude, chosen above
            key = torch.from_numpy(np.abs(contrib[:, 0])).reshape(-1, m)
        # Rows left out of the statistics as non-finite are not examples of what drives the
        # score: an infinite gradient would otherwise head the list.
        key = torch.where(finite[:, None], key, torch.full_like(key, -1.0)).reshape(-1)
        count = min(self.strongest.keep, int(finite.sum()) * m)
        flat_scores = scores.reshape(-1)
        for i in key.topk(count).indices.tolist():
            value = float(key[i])
            if not self.strongest.would_keep(value):
                continue
            row, output = divmod(i, m)

            def record(i: int = i, row: int = row, output: int = output,
                       value: float = value) -> ExampleRecord:
                label = None if labels is None else float(labels[row])
                return ExampleRecord(
                    id=_plain(ids[row]), output=self.outputs[output],
                    score=float(flat_scores[i]),
                    label=None if label is None or np.isnan(label) else label,
                    drivers=[(self.features[index[i, j]], float(gradient[i, j]),
                              float(contrib[i, j])) for j in range(self.top_k)],
                    proxy_contribution=value)

            self.strongest.offer(value, int(rows[row]), output, record)

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
        self.strongest.merge(other.strongest)
        self.sample.merge(other.sample)

    def contributions(self) -> ContributionSample:
        return self.sample.result(self.features, self.outputs)

    def best_first(self) -> list[ExampleRecord]:
        return self.strongest.best_first()


def _plain(value: object) -> object:
    """An Arrow or numpy scalar as a plain Python value."""
    if isinstance(value, pa.Scalar):
        return value.as_py()
    return value.item() if isinstance(value, np.generic) else value


def records_table(records: Sequence[ExampleRecord], *, with_label: bool) -> pa.Table:
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
        columns[f"driver_{j + 1}"] = pa.array([r.drivers[j][0] for r in records],
                                              type=pa.string())
        columns[f"gradient_{j + 1}"] = pa.array([r.drivers[j][1] for r in records],
                                                type=pa.float64())
        columns[f"contribution_{j + 1}"] = pa.array([r.drivers[j][2] for r in records],
                                                    type=pa.float64())
    return pa.table(columns)
