"""Reading the extract's file: its header, then its rows block by block, CSV or Parquet.

Parquet comes as Arrow record batches, CSV as parsed DataFrames (:mod:`sensaudit.inputs.tables`
turns either into chunks). Every error pandas or pyarrow raises on a bad file becomes a one-line
DataError naming the file; a CSV that is not UTF-8 text, a malformed row and a duplicate column
are named as such.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa

from sensaudit.core.errors import DataError, first_line
from sensaudit.inputs.dataset import is_parquet
from sensaudit.inputs.table_chunks import _MISSING_TEXT
from sensaudit.inputs.table_layout import Table
from sensaudit.settings.sections import DataConfig


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
        if is_parquet(path):
            import pyarrow.parquet as pq

            # Buffered and unprefetched, as the rows are read: prefetching would fetch (and
            # decode) the first row group's every page for the sample's 1,000 rows.
            pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
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


def _read_blocks(cfg: DataConfig, table: Table) -> Iterator[pa.RecordBatch | pd.DataFrame]:
    """Parquet as Arrow record batches; CSV as parsed DataFrames."""
    if is_parquet(cfg.path):
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
        if is_parquet(path):
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
        kinds = {name: (str if as_text or name in table.large_integers else "float64")
                 for name in table.features}
        if table.id is not None:
            kinds[table.id] = str  # ids such as "00123" keep their leading zeros
        for name in table.extra:  # numbers or levels: converted per chunk, text cells named
            if name not in table.features:
                kinds[name] = str
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
