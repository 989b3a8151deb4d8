"""sensaudit.inputs.tables: CSV, Parquet and DataFrames give the same validated chunks whatever
the chunk size; bad extracts get a DataError naming the file, the column and the row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sensaudit import DataError
from sensaudit.inputs.tables import frame_table, iter_chunks, iter_frame_chunks, open_table
from sensaudit.settings.sections import DataConfig


def _frame(rows: int = 23) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    return pd.DataFrame({
        "ad_id": [f"ad{i:03d}" for i in range(rows)],
        "copy_length": rng.integers(50, 900, rows).astype(np.int64),
        "clarity": rng.uniform(0, 1, rows).round(6),
        "channel": rng.choice(["web", "mail"], rows),  # text: never a default feature
        "cta_present": rng.integers(0, 2, rows).astype(np.int64),
        "quality": rng.integers(0, 2, rows).astype(np.int64),
    })


def _write(tmp_path: Path, frame: pd.DataFrame, kind: str) -> Path:
    path = tmp_path / f"extract.{kind}"
    if kind == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _read(path: Path, **kwargs) -> tuple[tuple[str, ...], list]:
    cfg = DataConfig(path=path, **kwargs)
    table = open_table(cfg)
    return table.features, list(iter_chunks(table, cfg, torch.float64))


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        _read(path, **kwargs)
    return str(err.value)


def _csv(tmp_path: Path, text: str, name: str = "extract.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _joined(chunks: list) -> tuple[torch.Tensor, list, np.ndarray | None]:
    labels = [c.labels for c in chunks]
    return (torch.cat([c.x for c in chunks]), [i for c in chunks for i in c.ids.to_pylist()],
            None if labels[0] is None else np.concatenate(labels))


# --- reading ----------------------------------------------------------------------------------


def test_default_features_are_numeric_columns_but_label_and_id(tmp_path):
    path = _write(tmp_path, _frame(), "csv")
    cfg = DataConfig(path=path, label="quality", id="ad_id")
    table = open_table(cfg)
    assert table.features == ("copy_length", "clarity", "cta_present")
    assert table.columns == ["copy_length", "clarity", "cta_present", "ad_id", "quality"]


def test_chunk_contents(tmp_path):
    frame = _frame()
    path = _write(tmp_path, frame, "csv")
    features, chunks = _read(path, label="quality", id="ad_id", chunk_rows=10)
    assert [(c.first_row, len(c.x), c.dropped) for c in chunks] == [(1, 10, 0), (11, 10, 0),
                                                                    (21, 3, 0)]
    x, ids, labels = _joined(chunks)
    expected = frame[list(features)].to_numpy(dtype=np.float64)
    assert x.dtype == torch.float64
    assert np.array_equal(x.numpy(), expected)
    assert ids == frame["ad_id"].tolist()
    assert np.array_equal(labels, frame["quality"].to_numpy(dtype=np.float64))


def test_chunks_keep_the_stored_precision(tmp_path):
    # Feature statistics are computed on the values as stored; the model's dtype is applied
    # when the model is called. Float32 Parquet columns stay float32 (no widened copy).
    frame = _frame()
    cfg = DataConfig(path=_write(tmp_path, frame, "csv"), features=("clarity",))
    (chunk,) = iter_chunks(open_table(cfg), cfg, torch.float32)
    assert chunk.x.dtype == torch.float64
    frame["clarity"] = frame["clarity"].astype("float32")
    cfg = DataConfig(path=_write(tmp_path, frame, "parquet"), features=("clarity",))
    (chunk,) = iter_chunks(open_table(cfg), cfg, torch.float32)
    assert chunk.x.dtype == torch.float32
    assert np.array_equal(chunk.x.numpy(), frame[["clarity"]].to_numpy())


@pytest.mark.parametrize("kwargs", [{}, {"label": "quality", "id": "ad_id"},
                                    {"features": ("clarity", "copy_length"), "label": "quality"}])
def test_csv_and_parquet_give_identical_chunks(tmp_path, kwargs):
    frame = _frame()
    csv_features, csv_chunks = _read(_write(tmp_path, frame, "csv"), chunk_rows=7, **kwargs)
    pq_features, pq_chunks = _read(_write(tmp_path, frame, "parquet"), chunk_rows=7, **kwargs)
    assert csv_features == pq_features
    assert len(csv_chunks) == len(pq_chunks) == 4
    for a, b in zip(csv_chunks, pq_chunks, strict=True):
        assert (a.first_row, a.dropped, a.ids.to_pylist()) == (b.first_row, b.dropped,
                                                            b.ids.to_pylist())
        assert torch.equal(a.x, b.x)
        if a.labels is None:
            assert b.labels is None
        else:
            assert np.array_equal(a.labels, b.labels)


def test_parquet_detected_by_contents(tmp_path):
    path = _write(tmp_path, _frame(), "parquet").rename(tmp_path / "extract.dat")
    features, chunks = _read(path, label="quality", id="ad_id")
    assert features == ("copy_length", "clarity", "cta_present")
    assert sum(len(c.x) for c in chunks) == 23


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("chunk_rows", [1, 2, 5, 22, 23, 24])
def test_chunk_size_does_not_change_the_data(tmp_path, kind, chunk_rows):
    path = _write(tmp_path, _frame(), kind)
    _, whole = _read(path, label="quality", id="ad_id", chunk_rows=1000)
    _, chunked = _read(path, label="quality", id="ad_id", chunk_rows=chunk_rows)
    assert len(chunked) == -(-23 // chunk_rows)
    assert [c.first_row for c in chunked] == list(range(1, 24, chunk_rows))
    x, ids, labels = _joined(chunked)
    x_whole, ids_whole, labels_whole = _joined(whole)
    assert torch.equal(x, x_whole)
    assert ids == ids_whole
    assert np.array_equal(labels, labels_whole)


def test_row_numbers_are_ids_without_an_id_column(tmp_path):
    path = _write(tmp_path, _frame(), "csv")
    _, chunks = _read(path, chunk_rows=10)
    assert [c.ids.to_pylist() for c in chunks][2] == [21, 22, 23]


def test_ids_keep_leading_zeros(tmp_path):
    path = _csv(tmp_path, "id,a\n007,1\n010,2\n")
    _, (chunk,) = _read(path, id="id")
    assert chunk.ids.to_pylist() == ["007", "010"]


def test_header_with_spaces_after_commas(tmp_path):
    path = _csv(tmp_path, "a, b, quality\n1, 2, 0\n3, 4, 1\n")
    features, (chunk,) = _read(path, label="quality")
    assert features == ("a", "b")
    assert chunk.x.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_dataframe_chunks_equal_csv_chunks(tmp_path):
    frame = _frame()
    path = _write(tmp_path, frame, "csv")
    csv_features, csv_chunks = _read(path, label="quality", chunk_rows=6)
    cfg = DataConfig(path=Path("<DataFrame>"), label="quality", chunk_rows=6)
    table = frame_table(frame, cfg)
    frame_chunks = list(iter_frame_chunks(frame, table, cfg, torch.float64))
    assert table.features == csv_features
    assert len(frame_chunks) == len(csv_chunks) == 4
    for a, b in zip(frame_chunks, csv_chunks, strict=True):
        assert (a.first_row, a.ids.to_pylist(), a.dropped) == (b.first_row, b.ids.to_pylist(),
                                                            b.dropped)
        assert torch.equal(a.x, b.x)
        assert np.array_equal(a.labels, b.labels)


# --- missing values ---------------------------------------------------------------------------


def test_missing_values_are_an_error_by_default(tmp_path):
    path = _csv(tmp_path, "a,b\n1,2\n3,\n5,nan\n7,8\n")
    assert _error(path) == (
        f"{path}: column 'b' has 2 missing or infinite values (first at row 2); fix the data "
        "or set data.on_missing: drop to skip such rows")


def test_infinity_is_an_error(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.5, -np.inf]})
    path = _write(tmp_path, frame, "parquet")
    assert _error(path) == (
        f"{path}: column 'b' has 1 missing or infinite value (first at row 3); fix the data "
        "or set data.on_missing: drop to skip such rows")


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_on_missing_drop_skips_and_counts(tmp_path, kind):
    frame = pd.DataFrame({"id": ["r1", "r2", "r3", "r4", "r5"],
                          "a": [1.0, np.nan, 3.0, 4.0, 5.0],
                          "b": [1.0, 2.0, 3.0, np.inf, 5.0]})
    path = _write(tmp_path, frame, kind)
    _, chunks = _read(path, id="id", on_missing="drop", chunk_rows=2)
    assert [c.dropped for c in chunks] == [1, 1, 0]
    x, ids, _ = _joined(chunks)
    assert ids == ["r1", "r3", "r5"]
    assert x.tolist() == [[1.0, 1.0], [3.0, 3.0], [5.0, 5.0]]


# --- bad extracts -----------------------------------------------------------------------------


def test_text_in_a_numeric_column_names_column_and_row(tmp_path):
    path = _csv(tmp_path, "a,b\n1,2\n3,4\n5,6\n7,seven\n9,10\n")
    for chunk_rows in (1, 2, 100):
        assert _error(path, features=("a", "b"), chunk_rows=chunk_rows) == (
            f"{path}: column 'b' has text in row 4 ('seven'); expected numbers")


def test_text_in_a_mostly_numeric_column_is_not_skipped_by_default(tmp_path):
    # Without data.features, a numeric column with one stray text value must be reported,
    # not silently left out of the audit as if it were a text column.
    path = _csv(tmp_path, "a,b,channel\n1,2,web\n3,x,mail\n5,6,web\n")
    assert _error(path) == f"{path}: column 'b' has text in row 2 ('x'); expected numbers"


def test_text_in_a_parquet_column_names_column_and_row(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["1", "2", "x"]})
    path = _write(tmp_path, frame, "parquet")
    assert _error(path, features=("a", "b")) == (
        f"{path}: column 'b' has text in row 3 ('x'); expected numbers")


def test_duplicate_header_column(tmp_path):
    path = _csv(tmp_path, "a,b,a\n1,2,3\n")
    assert _error(path) == f"{path}: column 'a' appears more than once in the header"


@pytest.mark.parametrize("kwargs, key, name", [
    ({"features": ("a", "zz")}, "data.features[1]", "zz"),
    ({"label": "quality"}, "data.label", "quality"),
    ({"id": "ad_id"}, "data.id", "ad_id"),
])
def test_missing_column_is_named_with_its_key(tmp_path, kwargs, key, name):
    path = _csv(tmp_path, "a,b\n1,2\n")
    assert _error(path, **kwargs) == (
        f"{path}: column '{name}' named by {key} is not in the data (columns: a, b)")


def test_no_numeric_columns(tmp_path):
    path = _csv(tmp_path, "name,channel\nx,web\ny,mail\n")
    assert _error(path) == (
        f"{path}: no numeric feature columns found; list them in data.features")


def test_empty_file(tmp_path):
    path = _csv(tmp_path, "")
    assert _error(path) == f"{path}: the file is empty; expected a CSV header row"


@pytest.mark.parametrize("kwargs", [{}, {"features": ("a", "b")}])
def test_header_only_file(tmp_path, kwargs):
    path = _csv(tmp_path, "a,b\n")
    assert _error(path, **kwargs) == f"{path}: the data has a header but no rows"


def test_header_only_parquet(tmp_path):
    path = _write(tmp_path, pd.DataFrame({"a": pd.Series([], dtype="float64")}), "parquet")
    assert _error(path) == f"{path}: the data has a header but no rows"


def test_missing_file_and_directory(tmp_path):
    assert _error(tmp_path / "nope.csv") == (
        f"{tmp_path / 'nope.csv'}: data file not found (data.path)")
    assert _error(tmp_path) == (
        f"{tmp_path}: data.path is a folder with no Parquet files in it; name a CSV or Parquet "
        "file, a folder of Parquet files or a glob")


def test_ragged_csv(tmp_path):
    path = _csv(tmp_path, "a,b\n1,2\n3,4,5\n")
    assert _error(path) == (
        f"{path}: malformed CSV: expected 2 fields in line 3, saw 3 (line 1 is the header)")


def test_not_utf8(tmp_path):
    path = tmp_path / "extract.csv"
    path.write_bytes(b"a,b\n\xff\xfe,2\n")
    assert _error(path) == (
        f"{path}: not a UTF-8 text CSV file (is it Parquet? name it .parquet)")


def test_dataframe_errors_name_the_frame():
    cfg = DataConfig(path=Path("<DataFrame>"), features=("a", "b"))
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [1.0, np.nan]})
    with pytest.raises(DataError) as err:
        list(iter_frame_chunks(frame, frame_table(frame, cfg), cfg))
    assert str(err.value) == (
        "<DataFrame>: column 'b' has 1 missing or infinite value (first at row 2); fix the "
        "data or set data.on_missing: drop to skip such rows")
    with pytest.raises(DataError) as err:
        frame_table(frame, DataConfig(path=Path("<DataFrame>"), features=("a", "c")))
    assert str(err.value) == (
        "<DataFrame>: column 'c' named by data.features[1] is not in the data (columns: a, b)")
