"""Per-row results kept from the audit's one read of the data until the feature statistics
are final.

Per-example contributions (attribution x the row's distance from the baseline, the features'
means by default) need statistics of the whole file, which are only known once every row has
been read. Rather than parse the data a second time, each chunk's compact results (row numbers,
ids, labels, the rows' feature values as read, scores and attributions in the model's dtype)
are kept here and replayed: in memory while small, in a temporary Arrow IPC file beyond
``memory_budget`` bytes. The file is read back one batch at a time, so memory stays flat.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

MEMORY_BUDGET = 256 * 2**20


@dataclass
class SpilledChunk:
    rows: np.ndarray  # int64 [rows] row numbers
    ids: pa.Array | np.ndarray
    labels: np.ndarray | None  # float64 [rows]
    results: list[tuple[torch.Tensor, torch.Tensor]]  # per model: scores, values
    x: torch.Tensor | None = None  # [rows, features] feature values, in the dtype appended


class Spill:
    def __init__(self, memory_budget: int = MEMORY_BUDGET, folder: str | Path | None = None):
        self.memory_budget = memory_budget
        self.folder = folder
        self._batches: list[pa.RecordBatch] = []
        self._shapes: list[tuple[int, int]] = []  # per model: (outputs, features)
        self._bytes = 0
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._dtypes: list[torch.dtype] = []
        self._x: tuple[int, torch.dtype] | None = None  # (features, dtype) of the rows' x

    def append(self, rows: np.ndarray, ids: pa.Array | np.ndarray, labels: np.ndarray | None,
               results: list[tuple[torch.Tensor, torch.Tensor]],
               x: torch.Tensor | None = None) -> None:
        """results: per model, scores [rows, outputs] and values [rows, outputs, features];
        x: the rows' feature values [rows, features], kept in their own dtype (give it on
        every chunk or on none)."""
        if not self._shapes:
            self._shapes = [(v.shape[1], v.shape[2]) for _, v in results]
            self._dtypes = [v.dtype for _, v in results]
            self._x = None if x is None else (x.shape[1], x.dtype)
        columns = {"row": pa.array(rows, type=pa.int64()),
                   "id": ids if isinstance(ids, pa.Array) else pa.array(ids)}
        if labels is not None:
            columns["label"] = pa.array(labels, type=pa.float64())
        for i, (scores, values) in enumerate(results):
            m, n = self._shapes[i]
            columns[f"scores_{i}"] = _fixed_list(scores, m)
            columns[f"values_{i}"] = _fixed_list(values, m * n)
        if self._x is not None and x is not None:
            columns["x"] = _fixed_list(x.to(self._x[1]), self._x[0])
        batch = pa.RecordBatch.from_pydict(columns)
        if self._writer is None and self._bytes + batch.nbytes > self.memory_budget:
            self._to_file(batch.schema)
        if self._writer is not None:
            self._writer.write_batch(batch)
        else:
            self._batches.append(batch)
            self._bytes += batch.nbytes

    def _to_file(self, schema: pa.Schema) -> None:
        self._file = tempfile.NamedTemporaryFile(prefix="sensaudit-spill-", suffix=".arrows",
                                                 dir=self.folder)
        self._writer = pa.ipc.new_stream(pa.OSFile(self._file.name, "wb"), schema)
        for batch in self._batches:
            self._writer.write_batch(batch)
        self._batches = []

    def __iter__(self) -> Iterator[SpilledChunk]:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._file is not None:
            with pa.OSFile(self._file.name, "rb") as source:
                for batch in pa.ipc.open_stream(source):
                    yield self._unpack(batch)
        else:
            for batch in self._batches:
                yield self._unpack(batch)

    def _unpack(self, batch: pa.RecordBatch) -> SpilledChunk:
        rows = batch.num_rows
        results = []
        for i, (m, n) in enumerate(self._shapes):
            scores = _tensor(batch.column(f"scores_{i}"), (rows, m), self._dtypes[i])
            values = _tensor(batch.column(f"values_{i}"), (rows, m, n), self._dtypes[i])
            results.append((scores, values))
        names = batch.schema.names
        labels = (batch.column("label").to_numpy(zero_copy_only=False)
                  if "label" in names else None)
        x = (_tensor(batch.column("x"), (rows, self._x[0]), self._x[1])
             if self._x is not None and "x" in names else None)
        return SpilledChunk(rows=batch.column("row").to_numpy(), ids=batch.column("id"),
                            labels=labels, results=results, x=x)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._file is not None:
            self._file.close()  # a NamedTemporaryFile deletes itself on close
            self._file = None
        self._batches = []


def _fixed_list(tensor: torch.Tensor, width: int) -> pa.FixedSizeListArray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
        tensor = tensor.float()
    flat = tensor.contiguous().reshape(-1).numpy()
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), width)


def _tensor(column: pa.Array, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    flat = column.flatten().to_numpy(zero_copy_only=False)
    with warnings.catch_warnings():
        # Arrow's buffers are read-only; these tensors are only ever read, so no copy.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(flat).reshape(shape).to(dtype)
