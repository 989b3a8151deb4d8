"""CSV/Parquet -> feature tensors, in chunks.

The audit reads its extract once, chunk by chunk, so memory does not grow with the file. Every
chunk is checked: columns present, numbers only, no NaN or infinity unless ``data.on_missing:
drop`` says to skip them. Row numbers in messages count data rows from 1 (the CSV header is not
a row). Parquet batches go straight from Arrow to one array per chunk; ids stay Arrow arrays
until they are written, so no per-row Python objects are made.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ..config import DataConfig
from ..errors import DataError, first_line
from . import dataset
from .dataset import WorkUnit

PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class Table:
    """What the audit reads from the extract: which columns play which part."""

    path: Path
    features: tuple[str, ...]
    label: str | None
    id: str | None
    row_count: int | None = None  # known up front for Parquet, not for CSV
    # Columns left out of the default features (text), named when the model's width differs.
    skipped: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        extra = [c for c in (self.id, self.label) if c is not None and c not in self.features]
        return list(self.features) + extra


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


def open_table(cfg: DataConfig) -> Table:
    """Read the extract's header and decide the feature columns (checked, not yet loaded)."""
    if dataset.is_dataset(cfg.path):
        return _open_dataset(cfg)
    columns, sample, row_count = _header(cfg)
    _check_columns(cfg, columns)
    features, skipped = _features(cfg, columns, sample)
    return Table(path=cfg.path, features=features, label=cfg.label, id=cfg.id,
                 row_count=row_count, skipped=skipped)


def _open_dataset(cfg: DataConfig) -> Table:
    """A folder or glob of Parquet files (:mod:`.dataset`): every file must hold the columns
    the audit reads; the features are decided from the first file with rows."""
    parts = dataset.read_parts(dataset.dataset_files(cfg.path))
    for part in parts:
        _check_duplicates(part.path, list(part.columns))
        _check_columns(replace(cfg, path=part.path), list(part.columns))
    first = next((part for part in parts if part.rows), parts[0])
    columns, sample, _ = _header(replace(cfg, path=first.path))
    features, skipped = _features(cfg, columns, sample)
    table = Table(path=cfg.path, features=features, label=cfg.label, id=cfg.id,
                  row_count=sum(part.rows for part in parts), skipped=skipped)
    for part in parts:
        absent = [name for name in table.columns if name not in part.columns]
        if absent:
            raise DataError(f"{part.path}: column '{absent[0]}' is not in this file, but "
                            f"{first.path.name} has it; every file of data.path must hold the "
                            "audited columns")
    return table


def _features(cfg: DataConfig, columns: list[str], sample: pd.DataFrame
              ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The feature columns, and the columns left out of them as text."""
    if cfg.features is not None:
        return tuple(cfg.features), ()
    if len(sample) == 0:
        # Said before feature inference: an empty column has no numeric dtype to infer, and
        # "no numeric feature columns" would send users looking at data.features.
        raise DataError(f"{cfg.path}: the data has a header but no rows")
    skip = {cfg.label, cfg.id}
    # A column holding numbers and some text is a feature with bad values, not a text column:
    # skipping it silently would audit the wrong inputs (reading it names the bad row).
    # True/false columns are 0/1 inputs, as a model trained on them saw them.
    features = tuple(c for c in columns if c not in skip
                     and (_numeric(sample[c]) or pd.api.types.is_bool_dtype(sample[c])
                          or _holds_numbers(sample[c])))
    if not features:
        raise DataError(f"{cfg.path}: no numeric feature columns found; list them in "
                        "data.features")
    skipped = tuple(c for c in columns if c not in skip and c not in features)
    return features, skipped


# For api.audit_frame: an in-memory DataFrame is checked as a file is.
def frame_table(frame: pd.DataFrame, cfg: DataConfig) -> Table:
    """The Table for an in-memory DataFrame: columns checked, features decided."""
    columns = [str(c) for c in frame.columns]
    _check_duplicates(cfg.path, columns)
    _check_columns(cfg, columns)
    sample = frame.rename(columns=str).head(1000)
    features, skipped = _features(cfg, columns, sample)
    return Table(path=cfg.path, features=features, label=cfg.label, id=cfg.id,
                 row_count=len(frame), skipped=skipped)


def iter_frame_chunks(frame: pd.DataFrame, table: Table, cfg: DataConfig,
                      dtype: torch.dtype = torch.float32) -> Iterator[Chunk]:
    """Like :func:`iter_chunks`, for an in-memory DataFrame."""
    frame = frame.rename(columns=str)
    if len(frame) == 0:
        raise DataError(f"{cfg.path}: the data has a header but no rows")
    missing = _MissingValues(table.features)
    for start in range(0, len(frame), cfg.chunk_rows):
        yield _frame_chunk(frame.iloc[start : start + cfg.chunk_rows], table, cfg, start + 1,
                           dtype, missing)
    missing.check(cfg)


def iter_chunks(table: Table, cfg: DataConfig, dtype: torch.dtype = torch.float32
                ) -> Iterator[Chunk]:
    """Yield validated chunks of at most ``cfg.chunk_rows`` rows, in file order.

    ``dtype`` is the model's: values too large for it are named here, not reported later as
    non-finite gradients. A folder or glob of Parquet files is read file by file, in sorted
    order, its rows numbered across the files (:mod:`.dataset`).
    """
    if dataset.is_dataset(cfg.path):
        yield from _dataset_chunks(table, cfg, dtype)
        return
    first_row = 1
    missing = _MissingValues(table.features)
    try:
        for block in _read_blocks(cfg, table):
            rows = block.num_rows if isinstance(block, pa.RecordBatch) else len(block)
            if rows == 0:
                continue
            if isinstance(block, pa.RecordBatch):
                chunk = _batch_chunk(block, table, cfg, first_row, dtype, missing)
            else:
                chunk = _frame_chunk(block, table, cfg, first_row, dtype, missing)
            first_row += rows
            yield chunk
    except ValueError:
        # The fast float parser met text somewhere; find and name its row the slow way.
        _raise_text_error(cfg, table)
        raise DataError(f"{cfg.path}: cannot parse the feature columns as numbers") from None
    if first_row == 1:
        raise DataError(f"{cfg.path}: the data has a header but no rows")
    missing.check(cfg)


def _dataset_chunks(table: Table, cfg: DataConfig, dtype: torch.dtype) -> Iterator[Chunk]:
    missing = MissingValues(table.features)
    units = dataset.work_units(cfg.path, rows_per_unit=1)  # row groups, in order
    for unit in units:
        yield from iter_unit_chunks(table, cfg, unit, dtype, missing)
    if not sum(unit.rows or 0 for unit in units):
        raise DataError(f"{cfg.path}: the data has a header but no rows")
    missing.check(cfg)


def iter_unit_chunks(table: Table, cfg: DataConfig, unit: WorkUnit, dtype: torch.dtype,
                     missing: MissingValues) -> Iterator[Chunk]:
    """The validated chunks of one work unit (row groups of one Parquet file), rows numbered
    from ``unit.first_row``. Missing values are tallied in ``missing``, whose ``check`` the
    caller runs once every unit is read (so an error reports the whole data's count)."""
    if unit.row_groups is None:
        raise ValueError("iter_unit_chunks reads Parquet row groups; read a CSV with iter_chunks")
    first_row = unit.first_row
    for batch in _unit_batches(unit, table, cfg.chunk_rows):
        if batch.num_rows:
            yield _batch_chunk(batch, table, cfg, first_row, dtype, missing)
            first_row += batch.num_rows


def _unit_batches(unit: WorkUnit, table: Table, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(unit.path, buffer_size=1 << 20, pre_buffer=False)
        yield from parquet.iter_batches(batch_size=chunk_rows, row_groups=unit.row_groups,
                                        columns=table.columns)
    except Exception as exc:  # pyarrow raises many types (some ValueErrors) for bad files
        raise DataError(f"{unit.path}: cannot read data ({first_line(exc)})") from None


def _raise_text_error(cfg: DataConfig, table: Table) -> None:
    first_row = 1
    for frame in _read_frames(cfg, table, as_text=True):
        for name in table.features:
            _numeric_column(frame[name], name, cfg.path, first_row)
        first_row += len(frame)


def _header(cfg: DataConfig) -> tuple[list[str], pd.DataFrame, int | None]:
    """Column names (checked for duplicates), a small sample to infer numeric columns, and
    the row count where the file records it (Parquet)."""
    path = cfg.path
    if not path.exists():
        raise DataError(f"{path}: data file not found (data.path)")
    if path.is_dir():
        raise DataError(f"{path}: data.path is a directory, not a CSV or Parquet file")
    if not path.is_file():
        # A FIFO or device would block the read forever (or never end).
        raise DataError(f"{path}: data.path is not a regular file (a pipe or device?); write "
                        "the extract to a CSV or Parquet file")
    row_count = None
    try:
        if _is_parquet(path):
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            columns = list(pf.schema_arrow.names)
            _check_duplicates(path, columns)
            row_count = pf.metadata.num_rows
            batch = next(pf.iter_batches(batch_size=1000), None)
            sample = batch.to_pandas() if batch is not None else pd.DataFrame(columns=columns)
        else:
            columns = _csv_columns(path)
            # skipinitialspace as _read_frames uses, so a header "a, b" gives the stripped
            # names the columns list holds.
            sample = pd.read_csv(path, nrows=1000, skipinitialspace=True, encoding="utf-8-sig")
            # A first row with more fields than the header makes pandas read its first
            # column(s) as the index, shifting every value one column over: refuse it.
            if not isinstance(sample.index, pd.RangeIndex) or len(sample.columns) != len(columns):
                raise DataError(f"{path}: malformed CSV: row 1 has more fields than the "
                                f"header's {len(columns)} column names")
            sample.columns = columns
    except DataError:
        raise
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: {_malformed(exc)}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text CSV file (is it Parquet? name it .parquet)"
                        ) from None
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(f"{path}: cannot read data ({first_line(exc)})") from None
    return columns, sample, row_count


def _csv_columns(path: Path) -> list[str]:
    """The CSV header's column names, stripped (and without a UTF-8 byte-order mark)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise DataError(f"{path}: the file is empty; expected a CSV header row")
    columns = [c.strip() for c in header]
    for i, name in enumerate(columns):
        if not name:
            raise DataError(f"{path}: column {i + 1} of the header has no name")
    _check_duplicates(path, columns)
    return columns


def _malformed(exc: Exception) -> str:
    """pandas' tokenizer error, e.g. 'Expected 5 fields in line 21, saw 7', for a message."""
    detail = first_line(exc).replace("Error tokenizing data. C error: ", "")
    if detail[1:2].islower():  # "Expected ..." reads on after a colon; "EOF ..." stays
        detail = detail[:1].lower() + detail[1:]
    # pandas' "line N" counts file lines (the header is line 1); its "row N" counts data rows
    # from 1, as sensaudit's messages do.
    where = " (line 1 is the header)" if " line " in detail else ""
    return f"malformed CSV: {detail}{where}"


def _check_duplicates(path: Path, columns: list[str]) -> None:
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise DataError(f"{path}: column '{name}' appears more than once in the header")
        seen.add(name)


def _check_columns(cfg: DataConfig, columns: list[str]) -> None:
    wanted = [("data.label", cfg.label), ("data.id", cfg.id)]
    if cfg.features_key == "the model file":
        wanted += [("the model file's saved inputs", f) for f in cfg.features or ()]
    else:
        wanted += [(f"{cfg.features_key}[{i}]", f) for i, f in enumerate(cfg.features or ())]
    for key, name in wanted:
        if name is not None and name not in columns:
            shown = ", ".join(columns[:20]) + (" ..." if len(columns) > 20 else "")
            raise DataError(f"{cfg.path}: column '{name}' named by {key} is not in the data "
                            f"(columns: {shown})")


def _holds_numbers(series: pd.Series) -> bool:
    text = series.dropna().astype(str).str.strip()
    text = text[~text.isin(_MISSING_TEXT)]
    return bool(pd.to_numeric(text, errors="coerce").notna().any())


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _read_blocks(cfg: DataConfig, table: Table) -> Iterator[pa.RecordBatch | pd.DataFrame]:
    """Parquet as Arrow record batches; CSV as parsed DataFrames."""
    if _is_parquet(cfg.path):
        yield from _parquet_batches(cfg, table)
    else:
        yield from _read_frames(cfg, table, as_text=False)


def _parquet_batches(cfg: DataConfig, table: Table) -> Iterator[pa.RecordBatch]:
    try:
        import pyarrow.parquet as pq

        # Buffered, unprefetched reads: a row group's pages are decoded as they stream in
        # rather than the whole row group being fetched first (a third less peak memory).
        parquet = pq.ParquetFile(cfg.path, buffer_size=1 << 20, pre_buffer=False)
        yield from parquet.iter_batches(batch_size=cfg.chunk_rows, columns=table.columns)
    except Exception as exc:  # pyarrow raises many types (some ValueErrors) for bad files
        raise DataError(f"{cfg.path}: cannot read data ({first_line(exc)})") from None


def _read_frames(cfg: DataConfig, table: Table, *, as_text: bool) -> Iterator[pd.DataFrame]:
    path = cfg.path
    try:
        if _is_parquet(path):
            import pyarrow.parquet as pq

            # Buffered, unprefetched reads: a row group's pages are decoded as they stream in
            # rather than the whole row group being fetched first (a third less peak memory).
            parquet = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
            for batch in parquet.iter_batches(batch_size=cfg.chunk_rows, columns=table.columns):
                yield batch.to_pandas()
            return
    except Exception as exc:  # pyarrow raises many types (some ValueErrors) for bad files
        raise DataError(f"{path}: cannot read data ({first_line(exc)})") from None
    try:
        kinds = {name: (str if as_text else "float64") for name in table.features}
        if table.id is not None:
            kinds[table.id] = str  # ids such as "00123" keep their leading zeros
        # Every column is parsed, not only the used ones (usecols): with usecols pandas
        # silently cuts a row with too many fields (an unquoted comma), shifting its values;
        # without, such a row is a ParserError naming its line. names= gives the header names
        # as _csv_columns cleaned them (BOM and spaces stripped).
        reader = pd.read_csv(path, header=0, names=_csv_columns(path), chunksize=cfg.chunk_rows,
                             dtype=kinds, skipinitialspace=True, keep_default_na=False,
                             # One list of missing-value markers for both parsers, so the
                             # fast path and the one naming a text cell agree on '#N/A'.
                             na_values=[] if as_text else sorted(_MISSING_TEXT),
                             encoding="utf-8-sig")
        for frame in reader:
            yield frame[table.columns]
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: {_malformed(exc)}") from None
    except ValueError as exc:
        if as_text:  # nothing is parsed as a number here: not a text cell, a broken file
            raise DataError(f"{path}: cannot read data ({first_line(exc)})") from None
        raise  # a float parse failure: iter_chunks names the offending row
    except Exception as exc:
        raise DataError(f"{path}: cannot read data ({first_line(exc)})") from None


_MISSING_TEXT = {"", "nan", "NaN", "NA", "N/A", "null", "NULL", "None", "inf", "-inf", "+inf",
                 "Infinity", "-Infinity", "infinity", "-infinity"}


class _MissingValues:
    """NaN/inf counts per feature over the whole file, so an error reports the file's total
    (not one chunk's) and the first row where each column has one. Tallies of parts of the
    data (work units) merge."""

    def __init__(self, features: tuple[str, ...]):
        self.features = features
        self.count = np.zeros(len(features), dtype=np.int64)
        self.first_row = np.zeros(len(features), dtype=np.int64)

    def add(self, bad: np.ndarray, first_row: int) -> None:
        """bad: bool [rows, features] for a chunk starting at data row ``first_row``."""
        new = (self.count == 0) & bad.any(axis=0)
        self.first_row[new] = first_row + np.argmax(bad[:, new], axis=0)
        self.count += bad.sum(axis=0)

    def merge(self, other: _MissingValues) -> None:
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


MissingValues = _MissingValues


def _frame_chunk(frame: pd.DataFrame, table: Table, cfg: DataConfig, first_row: int,
                 dtype: torch.dtype, missing: _MissingValues) -> Chunk:
    """A parsed CSV block (or an in-memory DataFrame's slice) as a validated chunk."""
    values = np.empty((len(frame), len(table.features)), dtype=np.float64)
    for j, name in enumerate(table.features):
        values[:, j] = _numeric_column(frame[name], name, cfg.path, first_row)
    ids = _id_array(frame[table.id]) if table.id else None
    labels = (pd.to_numeric(frame[table.label], errors="coerce").to_numpy(dtype=np.float64)
              if table.label else None)
    return _chunk(values, ids, labels, table, cfg, first_row, dtype, missing)


def _batch_chunk(batch: pa.RecordBatch, table: Table, cfg: DataConfig, first_row: int,
                 dtype: torch.dtype, missing: _MissingValues) -> Chunk:
    """A Parquet record batch as a validated chunk, without pandas: every numeric feature
    column is copied once into a [rows, features] array."""
    columns = [batch.column(name) for name in table.features]
    if not all(_arrow_numeric(c.type) for c in columns):
        # Text in a feature column: the pandas path names the cell.
        return _frame_chunk(batch.to_pandas(), table, cfg, first_row, dtype, missing)
    float32 = all(pa.types.is_float32(c.type) for c in columns)
    values = np.empty((batch.num_rows, len(columns)), dtype=np.float32 if float32 else np.float64)
    for j, column in enumerate(columns):
        values[:, j] = column.to_numpy(zero_copy_only=False)
    ids = batch.column(table.id) if table.id else None
    labels = None
    if table.label:
        label = batch.column(table.label)
        labels = (label.to_numpy(zero_copy_only=False).astype(np.float64)
                  if _arrow_numeric(label.type)
                  else pd.to_numeric(label.to_pandas(), errors="coerce").to_numpy(np.float64))
    return _chunk(values, ids, labels, table, cfg, first_row, dtype, missing)


def _id_array(column: pd.Series) -> pa.Array:
    # from_pandas: a missing id (NaN) is a null, as the CSV writer expects.
    try:
        return pa.array(column.to_numpy(), from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):  # mixed types: ids are text then
        return pa.array(column.astype(str).to_numpy())


def _arrow_numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def _chunk(values: np.ndarray, ids: pa.Array | None, labels: np.ndarray | None, table: Table,
           cfg: DataConfig, first_row: int, dtype: torch.dtype,
           missing: _MissingValues) -> Chunk:
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
        ids = None if ids is None else ids.filter(pa.array(keep))
        labels = None if labels is None else labels[keep]
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
    return Chunk(first_row=first_row, x=torch.from_numpy(values),
                 ids=pa.array(row_numbers) if ids is None else ids, rows=row_numbers,
                 labels=labels, dropped=dropped)


def _numeric_column(series: pd.Series, name: str, path: Path, first_row: int) -> np.ndarray:
    if _numeric(series):
        return series.to_numpy(dtype=np.float64)
    if pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64)
    text = series.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    not_number = numbers.isna() & ~text.isin(_MISSING_TEXT)
    if not_number.any():
        pos = int(np.argmax(not_number.to_numpy()))
        raise DataError(f"{path}: column '{name}' has text in row {first_row + pos} "
                        f"({text.iloc[pos]!r}); expected numbers")
    # copy: pandas may hand out a read-only view, and missing markers are written into it.
    out = numbers.to_numpy(dtype=np.float64, copy=True)
    out[text.isin(_MISSING_TEXT).to_numpy()] = np.nan
    return out


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False

