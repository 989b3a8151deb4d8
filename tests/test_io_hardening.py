"""Issue 18 (inputs and report folder): configs that name code, reports that replace or delete
files they did not write. Each exploit is shown working in plain Python, then refused through
sensaudit with exit 2 and a one-line message naming the file and the key."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers_bad import (
    HEADER,
    ROWS,
    Scorer,
    cli_error,
    config,
    export,
    state_dict,
    write_config,
    write_csv,
)

from sensaudit.errors import ReportError
from sensaudit.inputs.dataset import glob_files, protected_files
from sensaudit.reports.staging import StagedReport


def sensaudit(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m sensaudit ARGS`` in a fresh interpreter; a hang fails the test (the child
    is killed at ``timeout``) rather than hanging the suite."""
    return subprocess.run([sys.executable, "-m", "sensaudit", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)

# --- model.class naming a function: the command must never run -------------------------------


def _marker_command(marker: Path) -> str:
    return f'"{sys.executable}" -c "open(r\'{marker}\', \'w\').close()"'


def test_os_system_as_model_class_runs_a_command_in_plain_python(tmp_path):
    marker = tmp_path / "ran"
    # What a loader that calls whatever model.class names does with these settings.
    module, _, name = "os:system".partition(":")
    getattr(importlib.import_module(module), name)(**{"command": _marker_command(marker)})
    assert marker.exists()


def test_os_system_as_model_class_is_not_called(tmp_path):
    marker = tmp_path / "ran"
    state_dict(tmp_path / "weights.pt")
    write_csv(tmp_path / "data.csv")
    cfg = write_config(tmp_path, config(tmp_path, model={
        "path": "weights.pt", "class": "os:system",
        "kwargs": {"command": _marker_command(marker)}}))
    message = cli_error("run", str(cfg))
    assert message == (f"{tmp_path / 'weights.pt'}: model.class 'os:system' names a "
                       "builtin_function_or_method, not a torch.nn.Module class; it is not "
                       "called")
    assert not marker.exists()


# --- a glob of data and the report folder in one place ----------------------------------------


def _parquet_rows(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(ROWS, columns=list(HEADER))
    frame.iloc[:10].to_parquet(folder / "part-0.parquet", index=False)
    frame.iloc[10:].to_parquet(folder / "sensitivity.parquet", index=False)


@pytest.mark.parametrize("data_path", ["rows/*.parquet", "rows/**/*.parquet", "rows"])
def test_a_report_never_replaces_a_data_file_matched_by_a_glob(tmp_path, data_path):
    export(Scorer(), tmp_path / "model.pt2")
    _parquet_rows(tmp_path / "rows")
    data = tmp_path / "rows" / "sensitivity.parquet"
    before = data.read_bytes()
    cfg = write_config(tmp_path, config(tmp_path, data={"path": data_path, "id": "id",
                                                        "label": "label"},
                                        report={"dir": "rows", "formats": ["parquet"]}))
    message = cli_error("run", str(cfg))
    if data_path == "rows":  # the folder itself is the input
        assert message == (f"{tmp_path / 'rows'}: report.dir is the input file "
                           f"{tmp_path / 'rows'}; choose another report.dir")
    else:
        assert message == (f"{tmp_path / 'rows'}: the report sensitivity.parquet would "
                           f"overwrite the input file {data}; choose another report.dir")
    assert data.read_bytes() == before


def test_an_unexpanded_glob_protects_nothing(tmp_path):
    """Why the glob is expanded: the pattern itself names no file, so the report replaced the
    data file of its name (exit 0)."""
    _parquet_rows(tmp_path / "rows")
    data = tmp_path / "rows" / "sensitivity.parquet"
    pattern = tmp_path / "rows" / "*.parquet"
    with StagedReport(tmp_path / "rows", ["parquet"], protect=[pattern]) as staged:
        staged.write_text("sensitivity.parquet", "report")
        staged.commit()
    assert data.read_text() == "report"
    _parquet_rows(tmp_path / "rows")
    with pytest.raises(ReportError, match="would overwrite the input file"):
        with StagedReport(tmp_path / "rows", ["parquet"],
                          protect=protected_files(pattern)) as staged:
            staged.write_text("sensitivity.parquet", "report")
    assert data.read_bytes()[:4] == b"PAR1"


# --- ** over a symlink loop --------------------------------------------------------------------


def _looped_rows(tmp_path: Path) -> Path:
    """rows/a/x.parquet, and two links back up: every level doubles the paths through them."""
    _parquet_rows(tmp_path / "rows" / "a")
    os.symlink("..", tmp_path / "rows" / "a" / "up")
    os.symlink("../..", tmp_path / "rows" / "a" / "up2")
    return tmp_path / "rows"


def test_glob_follows_a_symlink_loop_without_end_in_plain_python(tmp_path):
    rows = _looped_rows(tmp_path)
    code = f"import glob; glob.glob({str(rows / '**' / '*.parquet')!r}, recursive=True)"
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", code], timeout=5)


def test_a_glob_over_a_symlink_loop_reads_each_file_once(tmp_path):
    rows = _looped_rows(tmp_path)
    started = time.monotonic()
    files = glob_files(rows / "**" / "*.parquet")
    assert files == [rows / "a" / "part-0.parquet", rows / "a" / "sensitivity.parquet"]
    assert time.monotonic() - started < 5
    assert protected_files(rows / "**" / "*.parquet") == [rows / "**" / "*.parquet", *files]


def test_a_run_over_a_symlink_loop_ends(tmp_path):
    rows = _looped_rows(tmp_path)
    export(Scorer(), tmp_path / "model.pt2")
    cfg = write_config(tmp_path, config(tmp_path, data={"path": "rows/**/*.parquet", "id": "id",
                                                        "label": "label"}))
    done = sensaudit("run", str(cfg), "--quiet", timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "reports" / "summary.json").is_file()
    assert rows.is_dir()
