"""A dataset of several Parquet files (a folder, or a glob) and its split into work units.

``data.path`` may name one CSV or Parquet file, a folder of Parquet files (searched
recursively, as Spark, Ray and Hive-partitioned writers lay them out; names starting with ``.``
or ``_``, such as ``_SUCCESS`` or ``_metadata``, are skipped) or a glob (``rows/part-*.parquet``).
Row identity does not depend on how the rows are split: the files are taken in sorted order,
and a row's number is its file's offset (the rows of every file before it, from the Parquet
footers) plus its position in the file, counting from 1 as for a single file. So the bootstrap
weights, SmoothGrad's noise and every tie-break keyed by row number are the same whether the
rows arrive as one file, many, or many work units on many machines.

A :class:`WorkUnit` is a run of row groups of one file (or one whole CSV file, whose rows are
not counted up front): what one worker reads at a time. Only the footers are read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sensaudit.core.errors import DataError, first_line

PARQUET_SUFFIXES = (".parquet", ".pq")
_GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class Part:
    """One file of a dataset, as its footer describes it."""

    path: Path
    rows: int
    columns: tuple[str, ...]
    row_group_rows: tuple[int, ...]  # rows per row group, in file order


@dataclass(frozen=True)
class WorkUnit:
    """Rows one worker reads: ``row_groups`` of ``path`` (None: the whole file, a CSV), whose
    first row is row number ``first_row`` (1-based, over the whole dataset)."""

    index: int
    path: Path
    row_groups: tuple[int, ...] | None
    first_row: int
    rows: int | None  # None for a CSV, whose rows are counted as it is read


def is_dataset(path: Path) -> bool:
    """True when ``path`` names several files: a folder, or a glob that is not a file's name."""
    if path.is_dir():
        return True
    return not path.exists() and any(c in str(path) for c in _GLOB_CHARACTERS)


def dataset_files(path: Path) -> list[Path]:
    """The Parquet files a folder or glob names, sorted by path; errors name ``path``."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith((".", "_"))
                                   for part in p.relative_to(path).parts))
        parquet = [p for p in files if p.suffix.lower() in PARQUET_SUFFIXES]
        if not parquet:
            raise DataError(f"{path}: data.path is a folder with no Parquet files in it; name a "
                            "CSV or Parquet file, a folder of Parquet files or a glob")
        return parquet
    files = glob_files(path)
    if not files:
        raise DataError(f"{path}: no file matches this pattern (data.path)")
    for file in files:
        if file.suffix.lower() not in PARQUET_SUFFIXES:
            raise DataError(f"{path}: the pattern matches {file}, which is not a .parquet file; "
                            "a glob of data must name Parquet files only")
    return files


def glob_files(pattern: Path) -> list[Path]:
    """The files a glob matches, sorted; ``**`` does not descend into symlinked folders.

    ``glob.glob(recursive=True)`` follows them, so a link to a parent folder (``a/up -> ..``)
    makes it walk a/up/a/up/... until the path is too long: two such links double the paths
    at every level, and it never ends. pathlib's ``**`` (Python 3.11 on) does not follow
    links, so every folder is walked once. The part of the pattern before its first wildcard
    is the folder to search (pathlib takes relative patterns only).
    """
    parts = pattern.parts
    first = next((i for i, part in enumerate(parts) if any(c in part for c in _GLOB_CHARACTERS)),
                 len(parts))
    if first == len(parts):
        return [pattern] if pattern.is_file() else []
    base = Path(*parts[:first]) if first else Path(".")
    rest = str(Path(*parts[first:]))
    if parts[-1] == "**":  # glob.glob's trailing ** lists files too; pathlib's only folders
        rest += "/*"
    # As glob.glob: a wildcard does not match a name starting with '.', unless the pattern
    # spells the dot itself.
    hidden_ok = any(part.startswith(".") for part in parts[first:])
    try:
        return sorted(p for p in base.glob(rest) if p.is_file() and (
            hidden_ok or not any(n.startswith(".") for n in p.relative_to(base).parts)))
    except (OSError, ValueError):  # a folder it cannot read; a malformed pattern
        return []


def protected_files(path: Path | None) -> list[Path]:
    """``path`` and, for a folder or glob of data, every file in it: report.dir must not
    replace or remove any of them (a report named like a data file in the same folder)."""
    if path is None:
        return []
    if path.is_dir():
        try:
            return [path, *(p for p in path.rglob("*") if p.is_file())]
        except OSError:
            return [path]
    if is_dataset(path):
        return [path, *glob_files(path)]
    return [path]


def read_parts(files: list[Path]) -> list[Part]:
    """Each file's footer: row count, columns and row groups (no data is read)."""
    import pyarrow.parquet as pq

    parts = []
    for file in files:
        try:
            metadata = pq.ParquetFile(file).metadata
            columns = tuple(metadata.schema.to_arrow_schema().names)
        except Exception as exc:  # pyarrow raises many types for unreadable files
            raise DataError(f"{file}: cannot read data ({first_line(exc)})") from None
        groups = tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
        parts.append(Part(path=file, rows=metadata.num_rows, columns=columns,
                          row_group_rows=groups))
    return parts


def work_units(path: Path, rows_per_unit: int) -> list[WorkUnit]:
    """``path`` (a file, folder or glob) split into units of consecutive row groups of about
    ``rows_per_unit`` rows (a larger row group is a unit of its own); a CSV file is one unit."""
    if is_dataset(path):
        return parts_units(read_parts(dataset_files(path)), rows_per_unit)
    if not is_parquet(path):
        return [WorkUnit(index=0, path=path, row_groups=None, first_row=1, rows=None)]
    return parts_units(read_parts([path]), rows_per_unit)


def parts_units(parts: list[Part], rows_per_unit: int) -> list[WorkUnit]:
    """The units of these files, in order, numbered from 0; each row numbered over them all."""
    units: list[WorkUnit] = []
    offset = 0
    for part in parts:
        start, rows = offset, 0
        groups: list[int] = []
        for group, count in enumerate(part.row_group_rows):
            if not count:  # an empty file may still hold a row group: nothing to read
                continue
            if groups and rows + count > rows_per_unit:
                units.append(WorkUnit(len(units), part.path, tuple(groups), start + 1, rows))
                start, groups, rows = start + rows, [], 0
            groups.append(group)
            rows += count
        if groups:
            units.append(WorkUnit(len(units), part.path, tuple(groups), start + 1, rows))
        offset += part.rows
    return units


def is_parquet(path: Path) -> bool:
    """A Parquet file, by its suffix or its first bytes."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False
