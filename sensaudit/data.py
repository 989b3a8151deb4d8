"""CSV/Parquet -> feature tensors, in chunks.

The audit reads its extract twice (feature statistics, then gradients), chunk by chunk, so
memory does not grow with the file. Every chunk is checked the same way on both passes: columns
present, numbers only, no NaN or infinity unless ``data.on_missing: drop`` says to skip them.
Row numbers in messages count data rows from 1 (the CSV header is not a row).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import DataConfig
from .errors import DataError, first_line

PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class Table:
    """What the audit reads from the extract: which columns play which part."""

    path: Path
    features: tuple[str, ...]
    label: str | None
    id: str | None

    @property
    def columns(self) -> list[str]:
        extra = [c for c in (self.id, self.label) if c is not None and c not in self.features]
        return list(self.features) + extra


@dataclass
class Chunk:
    """One validated block of rows. x: float [rows, features]."""

    first_row: int  # 1-based data-row number of the first row read into this chunk
    x: torch.Tensor
    ids: list  # row ids (the id column, else 1-based row numbers)
    rows: np.ndarray  # 1-based data-row numbers of the kept rows (stable across chunkings)
    labels: np.ndarray | None
    dropped: int  # rows skipped for missing values in this chunk


def open_table(cfg: DataConfig) -> Table:
    """Read the extract's header and decide the feature columns (checked, not yet loaded)."""
    columns, sample = _header(cfg)
    _check_columns(cfg, columns)
    return Table(path=cfg.path, features=_features(cfg, columns, sample), label=cfg.label,
                 id=cfg.id)


def _features(cfg: DataConfig, columns: list[str], sample: pd.DataFrame) -> tuple[str, ...]:
    if cfg.features is not None:
        return tuple(cfg.features)
    if len(sample) == 0:
        # Fix: a header-only file was reported as "no numeric feature columns found" (an empty
        # column has no numeric dtype to infer), which sent users looking at data.features.
        raise DataError(f"{cfg.path}: the data has a header but no rows")
    skip = {cfg.label, cfg.id}
    # A column holding numbers and some text is a feature with bad values, not a text column:
    # skipping it silently would audit the wrong inputs (reading it names the bad row).
    features = tuple(c for c in columns if c not in skip
                     and (_numeric(sample[c]) or _holds_numbers(sample[c])))
    if not features:
        raise DataError(f"{cfg.path}: no numeric feature columns found; list them in "
                        "data.features")
    return features


# Fix: api.audit_frame calls frame_table and iter_frame_chunks, which did not exist (every
# audit_frame call raised AttributeError). They check an in-memory DataFrame as a file is.
def frame_table(frame: pd.DataFrame, cfg: DataConfig) -> Table:
    """The Table for an in-memory DataFrame: columns checked, features decided."""
    columns = [str(c) for c in frame.columns]
    _check_duplicates(cfg.path, columns)
    _check_columns(cfg, columns)
    sample = frame.rename(columns=str).head(1000)
    return Table(path=cfg.path, features=_features(cfg, columns, sample), label=cfg.label,
                 id=cfg.id)


def iter_frame_chunks(frame: pd.DataFrame, table: Table, cfg: DataConfig,
                      dtype: torch.dtype = torch.float32) -> Iterator[Chunk]:
    """Like :func:`iter_chunks`, for an in-memory DataFrame."""
    frame = frame.rename(columns=str)
    if len(frame) == 0:
        raise DataError(f"{cfg.path}: the data has a header but no rows")
    for start in range(0, len(frame), cfg.chunk_rows):
        yield _to_chunk(frame.iloc[start : start + cfg.chunk_rows], table, cfg, start + 1, dtype)


def iter_chunks(table: Table, cfg: DataConfig, dtype: torch.dtype = torch.float32
                ) -> Iterator[Chunk]:
    """Yield validated chunks of at most ``cfg.chunk_rows`` rows, in file order."""
    first_row = 1
    try:
        for frame in _read_frames(cfg, table, as_text=False):
            if len(frame) == 0:
                continue
            chunk = _to_chunk(frame, table, cfg, first_row, dtype)
            first_row += len(frame)
            yield chunk
    except ValueError:
        # The fast float parser met text somewhere; find and name its row the slow way.
        _raise_text_error(cfg, table)
        raise DataError(f"{cfg.path}: cannot parse the feature columns as numbers") from None
    if first_row == 1:
        raise DataError(f"{cfg.path}: the data has a header but no rows")


def _raise_text_error(cfg: DataConfig, table: Table) -> None:
    first_row = 1
    for frame in _read_frames(cfg, table, as_text=True):
        for name in table.features:
            _numeric_column(frame[name], name, cfg.path, first_row)
        first_row += len(frame)


def _header(cfg: DataConfig) -> tuple[list[str], pd.DataFrame]:
    """Column names (checked for duplicates) and a small sample to infer numeric columns."""
    path = cfg.path
    if not path.exists():
        raise DataError(f"{path}: data file not found (data.path)")
    if path.is_dir():
        raise DataError(f"{path}: data.path is a directory, not a CSV or Parquet file")
    try:
        if _is_parquet(path):
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            columns = list(pf.schema_arrow.names)
            _check_duplicates(path, columns)
            batch = next(pf.iter_batches(batch_size=1000), None)
            sample = batch.to_pandas() if batch is not None else pd.DataFrame(columns=columns)
        else:
            with path.open(newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), None)
            if not header:
                raise DataError(f"{path}: the file is empty; expected a CSV header row")
            columns = [c.strip() for c in header]
            _check_duplicates(path, columns)
            # Fix: skipinitialspace as _read_frames uses, so a header "a, b" gives the
            # stripped names the columns list holds (KeyError 'b' before).
            sample = pd.read_csv(path, nrows=1000, skipinitialspace=True)
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text CSV file (is it Parquet? name it .parquet)"
                        ) from None
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(f"{path}: cannot read data ({first_line(exc)})") from None
    return columns, sample


def _check_duplicates(path: Path, columns: list[str]) -> None:
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise DataError(f"{path}: column '{name}' appears more than once in the header")
        seen.add(name)


def _check_columns(cfg: DataConfig, columns: list[str]) -> None:
    wanted = [("data.label", cfg.label), ("data.id", cfg.id)]
    wanted += [(f"data.features[{i}]", f) for i, f in enumerate(cfg.features or ())]
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


def _read_frames(cfg: DataConfig, table: Table, *, as_text: bool) -> Iterator[pd.DataFrame]:
    path = cfg.path
    try:
        if _is_parquet(path):
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=cfg.chunk_rows,
                                                           columns=table.columns):
                yield batch.to_pandas()
            return
    except Exception as exc:  # pyarrow raises many types (some ValueErrors) for bad files
        raise DataError(f"{path}: cannot read data ({first_line(exc)})") from None
    try:
        kinds = {name: (str if as_text else "float64") for name in table.features}
        if table.id is not None:
            kinds[table.id] = str  # ids such as "00123" keep their leading zeros
        yield from pd.read_csv(path, usecols=table.columns, chunksize=cfg.chunk_rows,
                                   dtype=kinds, skipinitialspace=True,
                                   keep_default_na=not as_text)
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV ({first_line(exc)})") from None
    except ValueError:
        raise  # a float parse failure: iter_chunks names the offending row
    except Exception as exc:
        raise DataError(f"{path}: cannot read data ({first_line(exc)})") from None


_MISSING_TEXT = {"", "nan", "NaN", "NA", "N/A", "null", "NULL", "None", "inf", "-inf", "+inf",
                 "Infinity", "-Infinity", "infinity", "-infinity"}


def _to_chunk(frame: pd.DataFrame, table: Table, cfg: DataConfig, first_row: int,
              dtype: torch.dtype) -> Chunk:
    values = np.empty((len(frame), len(table.features)), dtype=np.float64)
    for j, name in enumerate(table.features):
        values[:, j] = _numeric_column(frame[name], name, cfg.path, first_row)
    bad = ~np.isfinite(values)
    keep = slice(None)
    dropped = 0
    if bad.any():
        bad_rows = bad.any(axis=1)
        if cfg.on_missing == "error":
            j = int(np.argmax(bad.any(axis=0)))
            name = table.features[j]
            count = int(bad[:, j].sum())
            row = first_row + int(np.argmax(bad[:, j]))
            raise DataError(f"{cfg.path}: column '{name}' has {count} missing or infinite "
                            f"value{'s' if count != 1 else ''} (first at row {row}); fix the "
                            "data or set "
                            "data.on_missing: drop to skip such rows")
        keep = ~bad_rows
        dropped = int(bad_rows.sum())
        values = values[keep]
    row_numbers = np.arange(first_row, first_row + len(frame))[keep]
    ids = frame[table.id].to_numpy()[keep].tolist() if table.id else row_numbers.tolist()
    labels = None
    if table.label:
        labels = pd.to_numeric(frame[table.label], errors="coerce").to_numpy(dtype=np.float64)[keep]
    return Chunk(first_row=first_row, x=torch.from_numpy(values).to(dtype), ids=ids,
                 rows=row_numbers, labels=labels, dropped=dropped)


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

