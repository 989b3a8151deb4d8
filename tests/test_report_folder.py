"""The report folder is safe to share with inputs, with other runs and with crashes: no input is
ever overwritten, one run writes at a time, staging folders never pile up, and reports of
formats no longer asked for are removed (only files sensaudit wrote)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers_bad import cli, cli_error, config, good_setup, write_config

from sensaudit import load_config, run_audit
from sensaudit.core.errors import ReportError
from sensaudit.reports.staging import LOCK_NAME, MANIFEST_NAME, STAGING_PREFIX, StagedReport

ROOT = Path(__file__).resolve().parents[1]
AUDIT_FILES = ["examples.csv", "report.md", "sensitivity.csv", "summary.json", "suspects.csv"]


def names(folder: Path) -> list[str]:
    """The folder's entries, sensaudit's lock and manifest aside."""
    return sorted(p.name for p in folder.iterdir() if p.name not in (LOCK_NAME, MANIFEST_NAME))


def staging_folders(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(STAGING_PREFIX)]


def stage(target: Path, files: dict[str, str], **kwargs) -> list[Path]:
    with StagedReport(target, ["json"], **kwargs) as staged:
        for name, text in files.items():
            staged.write_text(name, text)
        return staged.commit()


# --- nothing the user gave is overwritten -----------------------------------------------------

SAME_DATA = {"path": "same/examples.csv", "id": "id", "label": "label"}


def test_data_inside_report_dir_under_a_report_name_is_refused(tmp_path):
    # Regression: this ran, exited 0 and replaced the data with examples.csv.
    cfg = good_setup(tmp_path)
    (tmp_path / "same").mkdir()
    data = tmp_path / "same" / "examples.csv"
    (tmp_path / "data.csv").rename(data)
    before = data.read_bytes()
    cfg = write_config(tmp_path, config(tmp_path, data=SAME_DATA, report={"dir": "same"}))
    assert cli_error("run", str(cfg)) == (
        f"{tmp_path / 'same'}: the report examples.csv would overwrite the input file {data}; "
        "choose another report.dir")
    assert data.read_bytes() == before
    assert names(tmp_path / "same") == ["examples.csv"]


def test_report_dir_reaching_an_input_through_a_symlink_is_refused(tmp_path):
    cfg = good_setup(tmp_path)
    (tmp_path / "same").mkdir()
    (tmp_path / "data.csv").rename(tmp_path / "same" / "examples.csv")
    (tmp_path / "alias").symlink_to(tmp_path / "same", target_is_directory=True)
    cfg = write_config(tmp_path, config(tmp_path, data=SAME_DATA, report={"dir": "alias"}))
    assert cli_error("run", str(cfg)) == (
        f"{tmp_path / 'alias'}: the report examples.csv would overwrite the input file "
        f"{tmp_path / 'same' / 'examples.csv'}; choose another report.dir")


def test_config_file_named_like_a_report_is_protected(tmp_path):
    good_setup(tmp_path)
    cfg = write_config(tmp_path, config(tmp_path, report={"dir": "."}), name="report.md")
    before = cfg.read_bytes()
    assert cli_error("run", str(cfg)) == (
        f"{tmp_path}: the report report.md would overwrite the input file {cfg}; "
        "choose another report.dir")
    assert cfg.read_bytes() == before


def test_report_dir_that_is_an_input_file_is_refused(tmp_path):
    good_setup(tmp_path)
    cfg = write_config(tmp_path, config(tmp_path, report={"dir": "data.csv"}))
    data = tmp_path / "data.csv"
    assert cli_error("run", str(cfg)) == (
        f"{data}: report.dir is the input file {data}; choose another report.dir")


def test_compare_protects_its_data(tmp_path):
    good_setup(tmp_path)
    (tmp_path / "out").mkdir()
    data = tmp_path / "out" / "comparison.csv"
    (tmp_path / "data.csv").rename(data)
    model = str(tmp_path / "model.pt2")
    message = cli_error("compare", model, model, "--config", str(tmp_path / "audit.yaml"),
                        "--data", str(data), "--out", str(tmp_path / "out"))
    assert message == (f"{tmp_path / 'out'}: the report comparison.csv would overwrite the input "
                       f"file {data}; choose another report.dir")


def test_removing_an_earlier_report_that_is_now_an_input_is_refused(tmp_path):
    target = tmp_path / "reports"
    stage(target, {"a.csv": "1", "b.csv": "1"})
    with pytest.raises(ReportError) as err:
        stage(target, {"a.csv": "2"}, protect=[target / "b.csv"])
    assert str(err.value) == (f"{target}: removing the earlier report b.csv would delete the "
                              f"input file {target / 'b.csv'}; choose another report.dir")
    assert (target / "a.csv").read_text() == "1" and (target / "b.csv").read_text() == "1"


def test_inputs_beside_the_reports_under_other_names_are_fine(tmp_path):
    cfg = good_setup(tmp_path)
    cfg = write_config(tmp_path, config(tmp_path, report={"dir": "."}))
    assert cli("run", str(cfg), "--quiet").exit_code == 0
    assert names(tmp_path) == sorted(["audit.yaml", "data.csv", "model.pt2", *AUDIT_FILES])


# --- one run at a time ------------------------------------------------------------------------


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path):
    target = tmp_path / "reports"
    with StagedReport(target, ["json"]) as first:
        first.write_text("a.csv", "first")
        with pytest.raises(ReportError) as err:
            with StagedReport(target, ["json"], lock_wait=0.1):
                pass
        first.commit()
    assert str(err.value) == (
        f"another sensaudit run is writing to {target} (report.dir); give each run its own "
        "report folder, or run them one after the other")
    assert (target / "a.csv").read_text() == "first"
    stage(target, {"a.csv": "second"})  # released once the first run is done
    assert (target / "a.csv").read_text() == "second"


def test_concurrent_runs_leave_one_runs_complete_set(tmp_path):
    """Runs in threads (each holds its own open lock file, as separate processes do) write
    different file sets slowly; after each round the folder holds exactly one run's set."""
    target = tmp_path / "reports"
    target.mkdir()
    (target / "notes.txt").write_text("the user's")
    rng = random.Random(0)

    failures: list[BaseException] = []

    def run(run_id: str, files: list[str]) -> None:
        try:
            with StagedReport(target, ["json"], lock_wait=30) as staged:
                for name in files:
                    staged.write_text(name, run_id)
                    time.sleep(0.002)
                staged.commit()
        except BaseException as exc:  # a thread's exception would otherwise only warn
            failures.append(exc)

    for round_ in range(15):
        sets = {f"{round_}-{i}": sorted(rng.sample(["a.md", "b.md", "c.md", "d.md"],
                                                   rng.randint(1, 4)))
                for i in range(3)}
        threads = [threading.Thread(target=run, args=(run_id, files))
                   for run_id, files in sets.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        reports = {p.name: p.read_text() for p in target.iterdir()
                   if p.is_file() and p.name not in (LOCK_NAME, MANIFEST_NAME, "notes.txt")}
        winners = set(reports.values())
        assert len(winners) == 1, reports
        assert sorted(reports) == sets[winners.pop()]
        assert staging_folders(target) == []
    assert (target / "notes.txt").read_text() == "the user's"


def test_after_a_run_the_report_folder_holds_only_the_reports(tmp_path):
    """What a CI job uploads from report.dir: the report files and the manifest that lets the
    next run remove a dropped format's reports; no lock file, no staging folder."""
    cfg = good_setup(tmp_path)
    reports = tmp_path / "reports"
    seen: list[list[str]] = []
    assert cli("run", str(cfg), "--quiet").exit_code == 0
    run_audit(load_config(cfg), progress=lambda *_: seen.append(
        sorted(p.name for p in reports.iterdir())))
    assert any(LOCK_NAME in listing for listing in seen)  # held while the run wrote
    assert sorted(p.name for p in reports.iterdir()) == [MANIFEST_NAME, *AUDIT_FILES]
    assert all((reports / name).is_file() for name in AUDIT_FILES)


def test_a_run_waiting_on_a_removed_lock_file_locks_afresh(tmp_path):
    """The holder removes the lock file before it unlocks: the run that waited on it must not
    take the removed file's lock for the folder's, or a third run could write beside it."""
    target = tmp_path / "reports"
    first = StagedReport(target, ["json"]).__enter__()
    waiting = StagedReport(target, ["json"], lock_wait=5)
    entered: list[StagedReport] = []
    thread = threading.Thread(target=lambda: entered.append(waiting.__enter__()))
    thread.start()
    time.sleep(0.3)  # the waiting run has opened the lock file and polls its flock
    assert entered == []
    first.write_text("a.json", "first")
    first.commit()
    first.__exit__(None, None, None)
    thread.join(timeout=10)
    assert entered == [waiting]
    try:
        # It holds the lock of the file now at the path, so a third run is refused.
        assert (target / LOCK_NAME).is_file()
        with pytest.raises(ReportError):
            StagedReport(target, ["json"], lock_wait=0.1).__enter__()
    finally:
        waiting.__exit__(None, None, None)
    assert not (target / LOCK_NAME).exists()
    assert sorted(p.name for p in target.iterdir()) == [MANIFEST_NAME, "a.json"]


# --- staging: inside the report folder, cleaned after crashes ---------------------------------

CHILD = textwrap.dedent("""
    import sys, time, types
    # Only the folder logic: sensaudit/__init__ imports torch, seconds this test need not spend.
    for name, folder in (("sensaudit", "sensaudit"), ("sensaudit.reports", "sensaudit/reports")):
        module = types.ModuleType(name)
        module.__path__ = [sys.argv[2] + "/" + folder]
        sys.modules[name] = module
    from sensaudit.reports.staging import StagedReport

    with StagedReport(sys.argv[1], ["json"]) as staged:
        staged.write_text("summary.json", "half-written")
        print("staged", flush=True)
        time.sleep(60)
        staged.commit()
""")


def _child_mid_write(target: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(ROOT)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "staged\n", child.stderr.read()
    return child


def test_killed_run_holds_no_lock_and_its_staging_is_removed_by_the_next(tmp_path):
    target = tmp_path / "reports"
    stage(target, {"summary.json": "previous"})
    child = _child_mid_write(target)
    try:
        with pytest.raises(ReportError):  # the lock holds across processes
            StagedReport(target, ["json"], lock_wait=0.1).__enter__()
    finally:
        child.kill()
        child.wait(timeout=10)
    assert len(staging_folders(target)) == 1  # SIGKILL: no chance to clean up
    assert (target / LOCK_NAME).is_file()
    assert (target / "summary.json").read_text() == "previous"

    stage(target, {"summary.json": "next"})
    assert staging_folders(target) == []
    assert not (target / LOCK_NAME).exists()  # the next run locked it, then removed it
    assert (target / "summary.json").read_text() == "next"


def test_terminated_run_cleans_its_staging(tmp_path):
    target = tmp_path / "reports"
    stage(target, {"summary.json": "previous"})
    child = _child_mid_write(target)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=10) == 128 + signal.SIGTERM
    assert "Traceback" not in child.stderr.read()
    assert staging_folders(target) == []
    assert names(target) == ["summary.json"]
    assert (target / "summary.json").read_text() == "previous"


def test_stale_staging_is_removed_and_user_folders_are_not(tmp_path):
    target = tmp_path / "reports"
    stale = target / f"{STAGING_PREFIX}999999-dead"
    stale.mkdir(parents=True)
    (stale / "summary.json").write_text("from a run that died")
    (target / ".staging-mine").mkdir()
    stage(target, {"summary.json": "new"})
    assert not stale.exists()
    assert names(target) == [".staging-mine", "summary.json"]


def test_sigterm_handler_only_while_writing_and_only_from_the_main_thread(tmp_path):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with StagedReport(tmp_path / "a", ["json"]):
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    seen = []

    def in_thread() -> None:
        with StagedReport(tmp_path / "b", ["json"]):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == [signal.SIG_DFL]

    def own(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, own)
    try:
        with StagedReport(tmp_path / "c", ["json"]):
            assert signal.getsignal(signal.SIGTERM) is own  # the program's choice is kept
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_nothing_is_written_beside_the_report_folder(tmp_path):
    """Staging lives inside report.dir, so its parent may be read-only."""
    cfg = good_setup(tmp_path)
    (tmp_path / "reports").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    seen = []
    run_audit(load_config(cfg), progress=lambda *_: seen.append(
        sorted(p.name for p in tmp_path.iterdir())))
    assert seen and all(listing == before for listing in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert names(tmp_path / "reports") == AUDIT_FILES


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the folder's mode")
def test_read_only_parent_with_a_writable_report_folder(tmp_path):
    cfg = good_setup(tmp_path)
    parent = tmp_path / "ro"
    (parent / "reports").mkdir(parents=True)
    cfg = write_config(tmp_path, config(tmp_path, report={"dir": "ro/reports"}))
    parent.chmod(0o555)
    try:
        assert cli("run", str(cfg), "--quiet").exit_code == 0
    finally:
        parent.chmod(0o755)
    assert names(parent / "reports") == AUDIT_FILES


# --- reports of formats no longer asked for ---------------------------------------------------


def test_dropped_format_reports_are_removed_and_user_files_kept(tmp_path):
    cfg = good_setup(tmp_path)
    assert cli("run", str(cfg), "--quiet").exit_code == 0
    reports = tmp_path / "reports"
    (reports / "notes.txt").write_text("mine")
    (reports / "old-model.md").write_text("mine too")
    cfg = write_config(tmp_path, config(tmp_path, report={"dir": "reports",
                                                          "formats": ["json"]}))
    assert cli("run", str(cfg), "--quiet").exit_code == 0
    assert names(reports) == ["notes.txt", "old-model.md", "summary.json"]
    manifest = json.loads((reports / MANIFEST_NAME).read_text())
    digest = hashlib.sha256((reports / "summary.json").read_bytes()).hexdigest()
    assert manifest == {"reports": {"audit": ["summary.json"]},
                        "sha256": {"summary.json": digest}}


def test_audit_and_compare_into_one_folder_keep_each_others_reports(tmp_path):
    cfg = good_setup(tmp_path)
    assert cli("run", str(cfg), "--quiet").exit_code == 0
    model = str(tmp_path / "model.pt2")
    assert cli("compare", model, model, "--config", str(cfg), "--quiet").exit_code == 0
    assert names(tmp_path / "reports") == sorted(
        [*AUDIT_FILES, "comparison.csv", "comparison.json", "comparison.md"])
    assert cli("run", str(cfg), "--quiet").exit_code == 0
    assert "comparison.json" in names(tmp_path / "reports")


def test_failed_commit_puts_removed_reports_back(tmp_path, monkeypatch):
    target = tmp_path / "reports"
    stage(target, {"a.csv": "1", "b.csv": "1", "c.csv": "1"})
    before = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    real_replace = os.replace

    def failing_replace(src, dst):
        # The last step: removing c.csv, after a.csv and the manifest were replaced.
        if Path(src).name == "c.csv" and Path(src).parent == target:
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr("sensaudit.reports.staging.os.replace", failing_replace)
    with pytest.raises(ReportError) as err:
        stage(target, {"a.csv": "2"})
    assert str(err.value) == f"{target}: cannot write reports (report.dir): Input/output error"
    assert {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == before
    assert staging_folders(target) == []


@pytest.mark.parametrize("manifest", [
    "not json", '["a.csv"]', '{"reports": {"audit": ["../outside.txt", ".sensaudit.lock"]}}'])
def test_a_bad_manifest_removes_nothing(tmp_path, manifest):
    target = tmp_path / "reports"
    stage(target, {"a.csv": "1", "b.csv": "1"})
    (target / MANIFEST_NAME).write_text(manifest)
    (tmp_path / "outside.txt").write_text("not sensaudit's")
    stage(target, {"c.csv": "2"})
    assert names(target) == ["a.csv", "b.csv", "c.csv"]
    assert (tmp_path / "outside.txt").exists()


def test_a_name_listed_twice_is_removed_once(tmp_path):
    target = tmp_path / "reports"
    stage(target, {"a.csv": "1", "b.csv": "1"})
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    manifest["reports"]["audit"] = ["a.csv", "a.csv"]
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    stage(target, {"c.csv": "2"})
    assert names(target) == ["b.csv", "c.csv"]


def test_a_failed_run_removes_a_folder_that_held_only_a_runs_lock_and_keeps_a_users(tmp_path):
    # Two runs failing together into a new folder: the one that did not make it finds only the
    # maker's lock there, so it removes the folder too if it fails last (the maker, seeing the
    # other's lock file, kept it). A folder the user made, empty, is kept.
    made_by_a_run = tmp_path / "reports"
    made_by_a_run.mkdir()
    (made_by_a_run / LOCK_NAME).touch()
    staged = StagedReport(made_by_a_run, ["json"]).__enter__()
    staged.__exit__(RuntimeError, RuntimeError("the model failed"), None)
    assert not made_by_a_run.exists()
    users = tmp_path / "mine"
    users.mkdir()
    staged = StagedReport(users, ["json"]).__enter__()
    staged.__exit__(RuntimeError, RuntimeError("the model failed"), None)
    assert users.is_dir() and not any(users.iterdir())


def test_a_folder_removed_while_a_run_locks_it_is_made_afresh(tmp_path, monkeypatch):
    # Between this run's mkdir (the folder exists) and its opening the lock file, the failing
    # run that made the folder removes it: the lock file cannot be created, and the run makes
    # the folder again instead of failing with "cannot write reports".
    target = tmp_path / "reports"
    target.mkdir()
    real_open = os.open
    removed: list[str] = []

    def open_after_removal(path, flags, mode=0o777, *args, **kwargs):
        if str(path).endswith(LOCK_NAME) and not removed:
            removed.append(str(path))
            target.rmdir()
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_after_removal)
    with StagedReport(target, ["json"]) as staged:
        staged.write_text("summary.json", "{}")
        staged.commit()
    assert removed and (target / "summary.json").read_text() == "{}"
