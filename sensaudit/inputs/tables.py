"""CSV/Parquet -> feature tensors, in chunks.

The audit reads its extract once, chunk by chunk, so memory does not grow with the file. Every
chunk is checked: columns present, numbers only, no NaN or infinity unless ``data.on_missing:
drop`` says to skip them. Row numbers in messages count data rows from 1 (the CSV header is not
a row). Parquet batches go straight from Arrow to one array per chunk; ids stay Arrow arrays
until they are written, so no per-row Python objects are made.

This module decides which columns play which part (:class:`Table`) and runs the chunk loop;
the reading sits beside it:

- :mod:`sensaudit.inputs.table_files`: the file's header, and its rows as Arrow record batches
  (Parquet) or parsed DataFrames (CSV), with read errors turned into messages.
- :mod:`sensaudit.inputs.table_chunks`: one block of rows -> a validated :class:`Chunk`
  (numbers only, missing values tallied, values too large for the model's dtype named).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pandas as pd
import pyarrow as pa
import torch

from sensaudit.core.errors import DataError, first_line
from sensaudit.inputs import dataset
from sensaudit.inputs.dataset import WorkUnit
from sensaudit.inputs.table_chunks import (
    _MISSING_TEXT,
    Chunk,
    MissingValues,
    _batch_chunk,
    _frame_chunk,
    _numeric,
    _numeric_column,
)
from sensaudit.inputs.table_files import _check_duplicates, _header, _read_blocks, _read_frames
from sensaudit.inputs.table_layout import Table
from sensaudit.settings.sections import DataConfig


def open_table(cfg: DataConfig) -> Table:
    """Read the extract's header and decide the feature columns (checked, not yet loaded)."""
    if dataset.is_dataset(cfg.path):
        return _open_dataset(cfg)
    columns, sample, row_count = _header(cfg)
    _check_columns(cfg, columns)
    features, skipped = _features(cfg, columns, sample)
    return Table(path=cfg.path, features=features, label=cfg.label, id=cfg.id,
                 row_count=row_count, skipped=skipped,
                 large_integers=_large_integers(sample, features),
                 **_extra(cfg, sample, features))


def _extra(cfg: DataConfig, sample: pd.DataFrame, features: tuple[str, ...]
           ) -> dict[str, tuple[str, ...]]:
    """Table.extra and Table.extra_text: the extra columns, and those of them read as text
    (their first rows hold text or true/false, not numbers). A feature is read as a number."""
    names = tuple(name for name, _ in cfg.extra)
    text = tuple(name for name in names if name not in features and name in sample
                 and not _numeric(sample[name]) and not _holds_numbers(sample[name]))
    return {"extra": names, "extra_text": text}


def _large_integers(sample: pd.DataFrame, features: tuple[str, ...]) -> tuple[str, ...]:
    """The features whose sampled values are integers beyond 2**24 (Table.large_integers)."""
    found = []
    for name in features:
        column = sample[name]
        if pd.api.types.is_signed_integer_dtype(column) and len(column) \
                and int(column.abs().max()) > 2**24:
            found.append(name)
    return tuple(found)


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
    chosen = set(features)  # a set: a tuple's `in` made this quadratic (100,000 columns: 65 s)
    skipped = tuple(c for c in columns if c not in skip and c not in chosen)
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
                 row_count=len(frame), skipped=skipped, **_extra(cfg, sample, features))


def iter_frame_chunks(frame: pd.DataFrame, table: Table, cfg: DataConfig,
                      dtype: torch.dtype = torch.float32) -> Iterator[Chunk]:
    """Like :func:`iter_chunks`, for an in-memory DataFrame."""
    frame = frame.rename(columns=str)
    if len(frame) == 0:
        raise DataError(f"{cfg.path}: the data has a header but no rows")
    missing = MissingValues(table.features)
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
    missing = MissingValues(table.features)
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
                  row_count=sum(part.rows for part in parts), skipped=skipped,
                  **_extra(cfg, sample, features))
    for part in parts:
        absent = [name for name in table.columns if name not in part.columns]
        if absent:
            raise DataError(f"{part.path}: column '{absent[0]}' is not in this file, but "
                            f"{first.path.name} has it; every file of data.path must hold the "
                            "audited columns")
    return table


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


def _check_columns(cfg: DataConfig, columns: list[str]) -> None:
    wanted = [("data.label", cfg.label), ("data.id", cfg.id)]
    if cfg.features_key == "the model file":
        wanted += [("the model file's saved inputs", f) for f in cfg.features or ()]
    else:
        wanted += [(f"{cfg.features_key}[{i}]", f) for i, f in enumerate(cfg.features or ())]
    wanted += [(key, name) for name, key in cfg.extra]
    for key, name in wanted:
        if name is not None and name not in columns:
            shown = ", ".join(columns[:20]) + (" ..." if len(columns) > 20 else "")
            raise DataError(f"{cfg.path}: column '{name}' named by {key} is not in the data "
                            f"(columns: {shown})")


def _holds_numbers(series: pd.Series) -> bool:
    text = series.dropna().astype(str).str.strip()
    text = text[~text.isin(_MISSING_TEXT)]
    return bool(pd.to_numeric(text, errors="coerce").notna().any())
