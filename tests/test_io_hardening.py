"""Issue 18 (inputs and report folder): configs that name code, reports that replace or delete
files they did not write. Each exploit is shown working in plain Python, then refused through
sensaudit with exit 2 and a one-line message naming the file and the key."""

from __future__ import annotations

import importlib
import json
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

from sensaudit.core.errors import ReportError
from sensaudit.inputs.dataset import glob_files, protected_files
from sensaudit.reports.staging import MANIFEST_NAME, StagedReport


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
    assert message == (f"{tmp_path / 'weights.pt'}: model.class 'os:system': module 'os' is "
                       "part of Python's standard library, which holds no torch.nn.Module; it "
                       "is not imported")
    assert not marker.exists()


def test_a_function_as_model_class_is_not_called(tmp_path):
    """Beyond the standard library: an installed or class_file module's function is refused
    before it is called, whatever model.kwargs hold."""
    marker = tmp_path / "ran"
    state_dict(tmp_path / "weights.pt")
    write_csv(tmp_path / "data.csv")
    (tmp_path / "helpers.py").write_text("import os\n\ndef shell(command):\n"
                                         "    os.system(command)\n", encoding="utf-8")
    cfg = write_config(tmp_path, config(tmp_path, model={
        "path": "weights.pt", "class": "helpers:shell", "class_file": "helpers.py",
        "kwargs": {"command": _marker_command(marker)}}))
    message = cli_error("run", str(cfg))
    assert message == (f"{tmp_path / 'weights.pt'}: model.class 'helpers:shell' names a "
                       "function, not a torch.nn.Module class; it is not called")
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_run_over_a_symlink_loop_ends(tmp_path):
    rows = _looped_rows(tmp_path)
    export(Scorer(), tmp_path / "model.pt2")
    cfg = write_config(tmp_path, config(tmp_path, data={"path": "rows/**/*.parquet", "id": "id",
                                                        "label": "label"}))
    done = sensaudit("run", str(cfg), "--quiet", timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "reports" / "summary.json").is_file()
    assert rows.is_dir()


# --- a planted manifest -------------------------------------------------------------------------


def _plant(folder: Path, manifest: dict | str) -> None:
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (folder / MANIFEST_NAME).write_text(text, encoding="utf-8")


def _commit(folder: Path, files: dict[str, str], **kwargs) -> None:
    with StagedReport(folder, ["json"], **kwargs) as staged:
        for name, text in files.items():
            staged.write_text(name, text)
        staged.commit()


def test_a_manifest_naming_a_file_without_its_digest_removes_nothing(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in ("results.csv", "notes.md", "train.py"):
        (reports / name).write_text("the user's")
    manifest = {"reports": {"audit": ["results.csv", "notes.md", "train.py"]}}
    # The old rule (any plain file the manifest lists) would have removed all three:
    listed = [n for n in manifest["reports"]["audit"] if (reports / n).is_file()]
    assert listed == ["results.csv", "notes.md", "train.py"]
    _plant(reports, manifest)
    _commit(reports, {"summary.json": "{}"})
    assert sorted(p.name for p in reports.iterdir() if not p.name.startswith(".")) == [
        "notes.md", "results.csv", "summary.json", "train.py"]


def test_a_manifest_with_a_wrong_digest_or_another_kind_of_file_removes_nothing(tmp_path):
    reports = tmp_path / "reports"
    _commit(reports, {"old.md": "a report", "keep.txt": "x"})
    manifest = json.loads((reports / MANIFEST_NAME).read_text())
    (reports / "old.md").write_text("edited by the user since")  # no longer what was written
    _plant(reports, manifest)
    _commit(reports, {"summary.json": "{}"})
    assert (reports / "old.md").read_text() == "edited by the user since"
    assert (reports / "keep.txt").exists()  # .txt is no report kind: never removed


def test_a_report_sensaudit_wrote_is_still_removed_when_dropped(tmp_path):
    reports = tmp_path / "reports"
    _commit(reports, {"report.md": "old", "summary.json": "{}"})
    _commit(reports, {"summary.json": "{}"})
    assert not (reports / "report.md").exists()


def test_a_symlinked_or_special_manifest_is_not_read(tmp_path):
    reports = tmp_path / "reports"
    _commit(reports, {"report.md": "mine"})
    manifest = json.loads((reports / MANIFEST_NAME).read_text())
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(manifest))
    (reports / MANIFEST_NAME).unlink()
    os.symlink(elsewhere, reports / MANIFEST_NAME)
    _commit(reports, {"summary.json": "{}"})
    assert (reports / "report.md").read_text() == "mine"
    assert elsewhere.read_text() == json.dumps(manifest)  # the link was replaced, not followed
    assert not (reports / MANIFEST_NAME).is_symlink()


@pytest.mark.slow
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_fifo_or_device_as_manifest_does_not_hang(tmp_path, special):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "report.md").write_text("mine")
    if special == "fifo":
        os.mkfifo(reports / MANIFEST_NAME)
    else:
        os.symlink(special, reports / MANIFEST_NAME)
    code = (f"from sensaudit.reports.staging import StagedReport\n"
            f"with StagedReport({str(reports)!r}, ['json']) as s:\n"
            f"    s.write_text('summary.json', '{{}}'); s.commit()\n")
    done = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert (reports / "report.md").read_text() == "mine"


# --- FIFOs and devices as inputs: refused at once, never read ---------------------------------


def _special(tmp_path: Path, kind: str) -> Path:
    """A FIFO nobody writes to (a plain read blocks forever), or /dev/zero (never ends)."""
    if kind == "fifo":
        path = tmp_path / "special.fifo"
        os.mkfifo(path)
        return path
    return Path("/dev/zero")


@pytest.mark.slow
def test_a_fifo_blocks_a_plain_read(tmp_path):
    fifo = _special(tmp_path, "fifo")
    code = f"open({str(fifo)!r}, 'rb').read()"
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", code], timeout=3)


def _one_line_refusal(done: subprocess.CompletedProcess, path: Path, key: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    kind = "a FIFO (named pipe)" if path.name.endswith(".fifo") else "a character device"
    assert lines[0] == (f"Error: {path}: {key} is {kind}, not a regular file; sensaudit reads "
                        "only regular files (write the content to a file)")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_special_files_are_refused_wherever_they_are_named(tmp_path, kind):
    """Each path the CLI opens: the config, run's model, compare's OLD and NEW (and a
    replica), init's model and data, resample's training data."""
    special = _special(tmp_path, kind)
    export(Scorer(), tmp_path / "model.pt2")
    write_csv(tmp_path / "data.csv")
    good = write_config(tmp_path, config(tmp_path))
    model = str(tmp_path / "model.pt2")
    bad_model = write_config(tmp_path, config(tmp_path, model={"path": str(special)}),
                             name="bad-model.yaml")
    cases = [
        (["run", str(special)], "the config file"),
        (["run", str(bad_model)], "model.path"),
        (["compare", str(special), model, "--config", str(good)], "OLD"),
        (["compare", model, str(special), "--config", str(good)], "NEW"),
        (["compare", model, model, "--old-replica", str(special), "--config", str(good)],
         "--old-replica"),
        (["init", str(special), str(tmp_path / "data.csv"), "--config",
          str(tmp_path / "new.yaml")], "MODEL"),
        (["init", model, str(special), "--config", str(tmp_path / "new.yaml")], "DATA"),
        (["resample", str(special), "--proxy", "c", "--label", "label", "--out",
          str(tmp_path / "out.csv")], "TRAIN"),
    ]
    # Each in a fresh interpreter (a hang is killed, not the suite), all at once: a special
    # file is a special file to every one of them.
    children = [subprocess.Popen([sys.executable, "-m", "sensaudit", *args],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 stdin=subprocess.DEVNULL) for args, _ in cases]
    try:
        for child, (args, key) in zip(children, cases, strict=True):
            out, err = child.communicate(timeout=120)
            _one_line_refusal(subprocess.CompletedProcess(args, child.returncode, out, err),
                              special, key)
    finally:
        for child in children:
            child.kill()
    assert not (tmp_path / "new.yaml").exists() and not (tmp_path / "out.csv").exists()
    assert not (tmp_path / "reports").exists()


def test_a_config_larger_than_the_limit_is_refused(tmp_path):
    cfg = write_config(tmp_path, config(tmp_path))
    with cfg.open("a") as handle:
        handle.write("#" * (1 << 20) + "\n")
    message = cli_error("run", str(cfg))
    assert message == f"{cfg}: the config file is {cfg.stat().st_size:,} bytes; the limit is " \
                      f"{1 << 20:,}"


# --- compare's bootstrap memory ---------------------------------------------------------------


# A 40,000-column Parquet (over the limit at the default 1,000 replicates) takes seconds to
# write and to read: the quick loop keeps the other.
@pytest.mark.parametrize("features, samples", [
    (2000, 100_000), pytest.param(40_000, None, marks=pytest.mark.slow)])
def test_a_bootstrap_too_large_for_memory_is_refused_before_any_row_is_read(
        tmp_path, features, samples):
    """Before: [samples, features] float64 accumulators, several per model, grew until the
    run died (a 100,000-column Parquet of 20 rows reached 6.2 GB at the default 1000
    replicates; exit 3). Now refused with the largest replicate count that fits."""
    import resource

    columns = {f"f{i}": [float(r)] * 20 for i, r in enumerate(range(features))}
    columns["label"] = [0.0] * 20
    pd.DataFrame(columns).to_parquet(tmp_path / "wide.parquet", index=False)
    export(Scorer(), tmp_path / "model.pt2")
    compare = {} if samples is None else {"bootstrap_samples": samples}
    cfg = write_config(tmp_path, config(tmp_path, data={"path": "wide.parquet",
                                                        "label": "label"},
                                        audit={"proxies": []}, compare=compare or None))
    model = str(tmp_path / "model.pt2")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    message = cli_error("compare", model, model, "--config", str(cfg))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    used = (samples or 1000) * features
    fits = 2**25 // features
    assert message == (
        f"{cfg}: compare.bootstrap_samples {samples or 1000:,} x {features:,} features is "
        f"{used:,} values per accumulator, over the limit of {2**25:,} (about 256 MiB each); "
        f"set compare.bootstrap_samples to at most {fits:,} (0 turns the row bootstrap off)")
    assert grown_mib < 1024  # the accumulators alone would take gigabytes
    assert not (tmp_path / "reports").exists()


@pytest.mark.slow
def test_a_standard_library_module_as_model_class_is_not_imported(tmp_path):
    # Importing `this` prints the Zen of Python: a module's code runs when it is imported.
    done = subprocess.run([sys.executable, "-c", "import this"], capture_output=True, text=True,
                          timeout=60)
    assert "Beautiful is better than ugly." in done.stdout
    state_dict(tmp_path / "weights.pt")
    write_csv(tmp_path / "data.csv")
    cfg = write_config(tmp_path, config(tmp_path, model={"path": "weights.pt",
                                                         "class": "this:Scorer"}))
    done = sensaudit("run", str(cfg))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"Error: {tmp_path / 'weights.pt'}: model.class 'this:Scorer': module 'this' is part "
        "of Python's standard library, which holds no torch.nn.Module; it is not imported")
    assert "Beautiful" not in done.stdout


def test_the_bootstrap_limit_counts_the_models_outputs(tmp_path):
    """100,000 replicates x 3 features fit the limit for one output (300,000 values), but a
    model with 200 outputs needs 60,000,000 per sum: refused once the outputs are known."""
    from models import MultiOutput, save_exported

    save_exported(MultiOutput(n_features=3, n_outputs=200), tmp_path / "multi.pt2", n_features=3)
    write_csv(tmp_path / "data.csv")
    cfg = write_config(tmp_path, config(tmp_path, model={"path": "multi.pt2"},
                                        compare={"bootstrap_samples": 100_000}))
    model = str(tmp_path / "multi.pt2")
    message = cli_error("compare", model, model, "--config", str(cfg))
    assert message == (
        f"{cfg}: compare.bootstrap_samples 100,000 x 3 features x 200 outputs is 60,000,000 "
        f"values per accumulator, over the limit of {2**25:,} (about 256 MiB each); set "
        "compare.bootstrap_samples to at most 55,924 (0 turns the row bootstrap off)")
