"""sensaudit.inputs.dataset: a folder or glob of Parquet files reads as the one file holding the
same rows (rows numbered across the files, in sorted order), and its work units, read apart,
give the same chunks; errors name the dataset or the file at fault."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sensaudit import DataError
from sensaudit.inputs.dataset import WorkUnit, work_units
from sensaudit.inputs.table_chunks import MissingValues
from sensaudit.inputs.tables import iter_chunks, iter_unit_chunks, open_table
from sensaudit.settings.sections import DataConfig

SIZES = (37, 0, 120, 9)  # uneven, one file empty


def _frame(rows: int = sum(SIZES)) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    return pd.DataFrame({"a": rng.normal(size=rows), "b": rng.uniform(size=rows),
                         "y": rng.integers(0, 2, rows).astype(float)})


def _write(frame: pd.DataFrame, path: Path, row_group_size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path,
                   row_group_size=row_group_size)


def _dataset(folder: Path, frame: pd.DataFrame) -> list[Path]:
    """frame split into files by SIZES; their sorted order is the rows' order."""
    names = ["k=0/p0.parquet", "k=1/p1.parquet", "p2.pq", "p3.parquet"]
    start = 0
    for name, size in zip(names, SIZES, strict=True):
        _write(frame.iloc[start : start + size], folder / name)
        start += size
    (folder / "_SUCCESS").write_text("")
    (folder / ".hidden.parquet").write_text("not read")
    return [folder / n for n in names]


def _read(path: Path, **kwargs) -> list:
    cfg = DataConfig(path=path, label="y", **kwargs)
    return list(iter_chunks(open_table(cfg), cfg, torch.float64))


def _rows(chunks: list) -> tuple[torch.Tensor, np.ndarray, list]:
    return (torch.cat([c.x for c in chunks]), np.concatenate([c.rows for c in chunks]),
            [i for c in chunks for i in c.ids.to_pylist()])


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_folder_and_glob_read_as_one_file(tmp_path, chunk_rows):
    frame = _frame()
    _write(frame, tmp_path / "whole.parquet", row_group_size=50)
    _dataset(tmp_path / "parts", frame)
    whole = _rows(_read(tmp_path / "whole.parquet", chunk_rows=chunk_rows))
    for path in (tmp_path / "parts", tmp_path / "parts" / "**" / "p*.*"):
        x, rows, ids = _rows(_read(path, chunk_rows=chunk_rows))
        torch.testing.assert_close(x, whole[0], rtol=0, atol=0)
        assert rows.tolist() == whole[1].tolist() == list(range(1, sum(SIZES) + 1))
        assert ids == whole[2]
    table = open_table(DataConfig(path=tmp_path / "parts", label="y"))
    assert (table.features, table.row_count) == (("a", "b"), sum(SIZES))


@pytest.mark.parametrize("rows_per_unit", [1, 16, 40, 10_000])
def test_work_units_read_apart_give_the_same_rows(tmp_path, rows_per_unit):
    """Units of row groups, each read on its own from its first row number, cover every row
    once, in order; their missing-value tallies merge into the whole read's."""
    frame = _frame()
    frame.loc[[3, 100, 101], "b"] = np.nan
    _dataset(tmp_path / "parts", frame)
    cfg = DataConfig(path=tmp_path / "parts", label="y", on_missing="drop", chunk_rows=5)
    table = open_table(cfg)
    units = work_units(cfg.path, rows_per_unit)
    assert [u.index for u in units] == list(range(len(units)))
    assert all(u.rows <= rows_per_unit or len(u.row_groups) == 1 for u in units
               if u.rows is not None and u.row_groups is not None)
    merged = MissingValues(table.features)
    chunks = []
    for unit in units:
        missing = MissingValues(table.features)
        chunks += list(iter_unit_chunks(table, cfg, unit, torch.float64, missing))
        merged.merge(missing)
    x, rows, _ = _rows(chunks)
    expected = [r for r in range(1, sum(SIZES) + 1) if r not in (4, 101, 102)]
    assert rows.tolist() == expected
    kept = frame.drop(index=[3, 100, 101])[["a", "b"]].to_numpy()
    torch.testing.assert_close(x, torch.tensor(kept), rtol=0, atol=0)
    assert merged.count.tolist() == [0, 3] and merged.first_row[1] == 4
    with pytest.raises(DataError) as err:
        merged.check(DataConfig(path=cfg.path))
    assert str(err.value).startswith(f"{cfg.path}: column 'b' has 3 missing or infinite values "
                                     "(first at row 4)")


def test_a_csv_is_one_unit(tmp_path):
    path = tmp_path / "d.csv"
    _frame().to_csv(path, index=False)
    assert work_units(path, 10) == [WorkUnit(0, path, None, 1, None)]


def test_missing_values_over_files_name_the_whole_count(tmp_path):
    frame = _frame()
    frame.loc[[150, 5], "a"] = np.inf
    _dataset(tmp_path / "parts", frame)
    with pytest.raises(DataError) as err:
        _read(tmp_path / "parts")
    assert str(err.value) == (
        f"{tmp_path / 'parts'}: column 'a' has 2 missing or infinite values (first at row 6); "
        "fix the data or set data.on_missing: drop to skip such rows")


def test_dataset_errors(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.csv").write_text("a\n1\n")
    assert _error(empty) == (f"{empty}: data.path is a folder with no Parquet files in it; name "
                             "a CSV or Parquet file, a folder of Parquet files or a glob")
    assert _error(tmp_path / "nothing-*.parquet") == (
        f"{tmp_path / 'nothing-*.parquet'}: no file matches this pattern (data.path)")
    assert _error(empty / "*.*") == (
        f"{empty / '*.*'}: the pattern matches {empty / 'notes.csv'}, which is not a .parquet "
        "file; a glob of data must name Parquet files only")
    parts = tmp_path / "parts"
    files = _dataset(parts, _frame())
    _write(_frame(5)[["a", "y"]], files[3])  # the last file lacks feature b
    assert _error(parts) == (f"{files[3]}: column 'b' is not in this file, but p0.parquet has "
                             "it; every file of data.path must hold the audited columns")
    assert _error(parts, features=("a", "c")) == (
        f"{files[0]}: column 'c' named by data.features[1] is not in the data (columns: a, b, "
        "y)")
    files[2].write_bytes(b"PAR1 broken")
    assert _error(parts).startswith(f"{files[2]}: cannot read data (")


def test_a_dataset_of_empty_files_has_no_rows(tmp_path):
    _write(_frame(0), tmp_path / "parts" / "p0.parquet")
    assert _error(tmp_path / "parts", features=("a", "b")) == (
        f"{tmp_path / 'parts'}: the data has a header but no rows")


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        _read(path, **kwargs)
    return str(err.value)
