"""One block of rows -> a validated chunk: the float tensor, ids, row numbers and labels.

A Parquet record batch of numeric columns is copied once into a [rows, features] array, without
pandas; a CSV block (or a DataFrame's slice, or a batch with text in a feature column) goes
through pandas, which names a text cell's row. Rows with NaN or infinity are dropped and tallied
per feature over the whole file (:class:`MissingValues`), so ``data.on_missing: error`` reports
the file's total and the first row of each column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from sensaudit.core.errors import DataError
from sensaudit.inputs.table_layout import Table
from sensaudit.settings.sections import DataConfig
from sensaudit.stats.scratch import reused


@dataclass
class Chunk:
    """One validated block of rows. x: float [rows, features], float32 when every feature
    column is stored as float32, else float64 (the model's dtype is applied later)."""

    first_row: int  # 1-based data-row number of the first row read into this chunk
    x: torch.Tensor
    ids: pa.Array  # row ids (the id column, else the 1-based row numbers)
    rows: np.ndarray  # int64 1-based data-row numbers of the kept rows: the rows' identity
    labels: np.ndarray | None
    dropped: int  # rows skipped for missing values in this chunk
    # Integer-typed columns: the largest |value| per feature (-1 for other columns), and the
    # int64 values of those float64 cannot hold exactly (beyond 2**53), for exact statistics.
    integer_max: np.ndarray | None = None
    exact: dict[int, np.ndarray] | None = None
    # Table.extra's columns (audit.protected), by name: float64 [rows] (NaN where missing),
    # or for Table.extra_text an object array of str (None where missing).
    extra: dict[str, np.ndarray] = field(default_factory=dict)


_MISSING_TEXT = {"", "nan", "NaN", "NA", "N/A", "null", "NULL", "None", "inf", "-inf", "+inf",
                 "Infinity", "-Infinity", "infinity", "-infinity"}


class MissingValues:
    """NaN/inf counts per feature over the whole file, so an error reports the file's total
    (not one chunk's) and the first row where each column has one."""

    def __init__(self, features: tuple[str, ...]):
        self.features = features
        self.count = np.zeros(len(features), dtype=np.int64)
        self.first_row = np.zeros(len(features), dtype=np.int64)

    def add(self, bad: np.ndarray, first_row: int) -> None:
        """bad: bool [rows, features] for a chunk starting at data row ``first_row``."""
        new = (self.count == 0) & bad.any(axis=0)
        self.first_row[new] = first_row + np.argmax(bad[:, new], axis=0)
        self.count += bad.sum(axis=0)

    def merge(self, other: MissingValues) -> None:
        seen = other.count > 0
        earlier = seen & ((self.count == 0) | (other.first_row < self.first_row))
        self.first_row[earlier] = other.first_row[earlier]
        self.count += other.count

    def check(self, cfg: DataConfig) -> None:
        """With data.on_missing: error, refuse the file if any feature had a missing value."""
        if cfg.on_missing != "error" or not self.count.any():
            return
        j = int(np.argmax(self.count > 0))
        count = int(self.count[j])
        others = int((self.count > 0).sum()) - 1
        also = f"; {others} more column(s) have some too" if others else ""
        raise DataError(f"{cfg.path}: column '{self.features[j]}' has {count} missing or "
                        f"infinite value{'s' if count != 1 else ''} (first at row "
                        f"{int(self.first_row[j])}){also}; fix the data or set "
                        "data.on_missing: drop to skip such rows")


def _frame_chunk(frame: pd.DataFrame, table: Table, cfg: DataConfig, first_row: int,
                 dtype: torch.dtype, missing: MissingValues) -> Chunk:
    """A parsed CSV block (or an in-memory DataFrame's slice) as a validated chunk."""
    values = np.empty((len(frame), len(table.features)), dtype=np.float64)
    integers = {}
    for j, name in enumerate(table.features):
        values[:, j] = _numeric_column(frame[name], name, cfg.path, first_row)
        exact = _integer_values(frame[name])
        if exact is not None:
            integers[j] = exact
    ids = _id_array(frame[table.id]) if table.id else None
    labels = (pd.to_numeric(frame[table.label], errors="coerce").to_numpy(dtype=np.float64)
              if table.label else None)
    extra = {name: _extra_column(frame[name], name, table, cfg.path, first_row)
             for name in table.extra}
    return _chunk(values, ids, labels, table, cfg, first_row, dtype, missing, integers, extra)


def _extra_column(series: pd.Series, name: str, table: Table, path: Path,
                  first_row: int) -> np.ndarray:
    """An extra column's values: text levels (None where missing) for Table.extra_text, else
    numbers (NaN where missing; text in a cell is named with its row)."""
    if name not in table.extra_text:
        if not pd.api.types.is_numeric_dtype(series):  # read as text: missing markers are NaN
            series = series.astype(object).where(series.notna(), "")
        return _numeric_column(series, name, path, first_row)
    text = series.astype(object)
    missing = text.isna().to_numpy() | text.astype(str).str.strip().isin(_MISSING_TEXT).to_numpy()
    levels: np.ndarray = text.astype(str).str.strip().to_numpy(dtype=object)
    levels[missing] = None
    return levels


def _batch_chunk(batch: pa.RecordBatch, table: Table, cfg: DataConfig, first_row: int,
                 dtype: torch.dtype, missing: MissingValues) -> Chunk:
    """A Parquet record batch as a validated chunk, without pandas: every numeric feature
    column is copied once into a [rows, features] array."""
    columns = [batch.column(name) for name in table.features]
    if not all(_arrow_numeric(c.type) for c in columns):
        # Text in a feature column: the pandas path names the cell.
        return _frame_chunk(batch.to_pandas(), table, cfg, first_row, dtype, missing)
    float32 = all(pa.types.is_float32(c.type) for c in columns)
    # Column by column into a [features, rows] staging array (each a contiguous copy, into
    # memory reused from the last batch), then transposed into a fresh [rows, features] array
    # at once by torch's blocked copy: a third of the time of writing every column into a
    # strided slice of the row-major array. clone, not contiguous(): with one row or one
    # feature the transposed view counts as contiguous, and the chunk must not share the stage.
    by_column = reused((len(columns), batch.num_rows),
                       torch.float32 if float32 else torch.float64, slot="columns").numpy()
    integers = {}
    for j, column in enumerate(columns):
        by_column[j] = column.to_numpy(zero_copy_only=False)
        if pa.types.is_signed_integer(column.type) and column.null_count == 0:
            integers[j] = column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    values = torch.from_numpy(by_column).T.clone(memory_format=torch.contiguous_format).numpy()
    ids = batch.column(table.id) if table.id else None
    labels = None
    if table.label:
        label = batch.column(table.label)
        labels = (label.to_numpy(zero_copy_only=False).astype(np.float64)
                  if _arrow_numeric(label.type)
                  else pd.to_numeric(label.to_pandas(), errors="coerce").to_numpy(np.float64))
    extra = {}
    for name in table.extra:
        column = batch.column(name)
        extra[name] = (column.to_numpy(zero_copy_only=False).astype(np.float64)
                       if _arrow_numeric(column.type) and name not in table.extra_text
                       else _extra_column(column.to_pandas(), name, table, cfg.path, first_row))
    return _chunk(values, ids, labels, table, cfg, first_row, dtype, missing, integers, extra)


def _id_array(column: pd.Series) -> pa.Array:
    # from_pandas: a missing id (NaN) is a null, as the CSV writer expects.
    try:
        return pa.array(column.to_numpy(), from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):  # mixed types: ids are text then
        return pa.array(column.astype(str).to_numpy())


def _arrow_numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_boolean(kind))


def _chunk(values: np.ndarray, ids: pa.Array | None, labels: np.ndarray | None, table: Table,
           cfg: DataConfig, first_row: int, dtype: torch.dtype,
           missing: MissingValues, integers: dict[int, np.ndarray] | None = None,
           extra: dict[str, np.ndarray] | None = None) -> Chunk:
    """Validate one block of rows; rows with NaN/inf are dropped here and tallied in
    ``missing``, whose check() at the end of the file decides whether that is an error."""
    finite = np.isfinite(values)
    row_numbers = np.arange(first_row, first_row + len(values), dtype=np.int64)
    dropped = 0
    if not finite.all():
        bad = ~finite
        missing.add(bad, first_row)
        keep = ~bad.any(axis=1)
        dropped = int((~keep).sum())
        values, row_numbers = values[keep], row_numbers[keep]
        integers = {j: v[keep] for j, v in (integers or {}).items()}
        ids = None if ids is None else ids.filter(pa.array(keep))
        labels = None if labels is None else labels[keep]
        extra = {name: column[keep] for name, column in (extra or {}).items()}
    if dtype.is_floating_point and values.dtype == np.float64 and dtype != torch.float64 \
            and values.size:
        # A float32 model would see such a value as infinity: name it rather than report
        # "non-finite gradients" for a row whose data looked finite.
        too_large = np.abs(values) > torch.finfo(dtype).max
        if too_large.any():
            row, j = np.argwhere(too_large)[0]
            raise DataError(f"{cfg.path}: column '{table.features[j]}' has a value too large "
                            f"for the model's {str(dtype).replace('torch.', '')} inputs (row "
                            f"{row_numbers[row]}: {values[row, j]:g})")
    integer_max, exact = _integer_columns(integers or {}, values.shape[1])
    return Chunk(first_row=first_row, x=torch.from_numpy(values),
                 ids=pa.array(row_numbers) if ids is None else ids, rows=row_numbers,
                 labels=labels, dropped=dropped, integer_max=integer_max, exact=exact,
                 extra=extra or {})


def _integer_columns(integers: dict[int, np.ndarray], n_features: int
                     ) -> tuple[np.ndarray | None, dict[int, np.ndarray] | None]:
    """The chunk's integer columns: their largest |value| (-1 elsewhere) and, for those beyond
    2**53 (float64 rounds them), their exact values."""
    if not integers:
        return None, None
    largest = np.full(n_features, -1.0)
    exact = {}
    for j, column in integers.items():
        if not len(column):
            continue
        top = max(abs(int(column.min())), abs(int(column.max())))
        largest[j] = float(top)
        if top > 2**53:
            exact[j] = column
    return largest, exact or None


def _integer_values(series: pd.Series) -> np.ndarray | None:
    """A column's exact int64 values when it holds integers only (an integer dtype, or text
    a CSV's large-integer column was read as), else None."""
    if pd.api.types.is_signed_integer_dtype(series):
        if series.hasnans:
            return None
        exact: np.ndarray = series.to_numpy(dtype=np.int64)
        return exact
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        numbers = pd.to_numeric(series.astype(str).str.strip(), errors="coerce")
        if pd.api.types.is_signed_integer_dtype(numbers):
            parsed: np.ndarray = numbers.to_numpy(dtype=np.int64)
            return parsed
    return None


def _numeric_column(series: pd.Series, name: str, path: Path, first_row: int) -> np.ndarray:
    if _numeric(series) or pd.api.types.is_bool_dtype(series):
        values: np.ndarray = series.to_numpy(dtype=np.float64)
        return values
    text = series.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    not_number = numbers.isna() & ~text.isin(_MISSING_TEXT)
    if not_number.any():
        pos = int(np.argmax(not_number.to_numpy()))
        raise DataError(f"{path}: column '{name}' has text in row {first_row + pos} "
                        f"({text.iloc[pos]!r}); expected numbers")
    # copy: pandas may hand out a read-only view, and missing markers are written into it.
    out: np.ndarray = numbers.to_numpy(dtype=np.float64, copy=True)
    out[text.isin(_MISSING_TEXT).to_numpy()] = np.nan
    return out


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
