"""Reports are written to a staging folder and moved into report.dir only when complete: a
failed or interrupted run leaves the previous reports exactly as they were, and no staging
folder behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers_bad import ROWS, Fn, Scorer, cli, cli_error, config, export, write_config, write_csv

from sensaudit import load_config, run_audit
from sensaudit.core.errors import ReportError

REPORT_FILES = ["examples.csv", "report.md", "sensitivity.csv", "summary.json", "suspects.csv"]
# sensaudit's own entry beside the reports (sorted before them); the lock file is gone once the
# run ends.
BOOKKEEPING = [".sensaudit-manifest.json"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """The folder's files (a run's staging folder inside it is checked by leftovers())."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def leftovers(tmp_path: Path) -> list[str]:
    """Staging folders left in report.dir (or beside it, where they used to be)."""
    return [p.name for folder in (tmp_path, tmp_path / "reports") if folder.is_dir()
            for p in folder.iterdir() if "staging" in p.name]


@pytest.fixture
def previous(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A config whose first run passed; returns it and the reports that run wrote."""
    export(Scorer(), tmp_path / "model.pt2")
    write_csv(tmp_path / "data.csv")
    cfg = write_config(tmp_path, config(tmp_path, data={"path": "data.csv", "id": "id",
                                                        "label": "label", "chunk_rows": 2}))
    assert cli("run", str(cfg), "--quiet").exit_code == 0
    reports = snapshot(tmp_path / "reports")
    assert sorted(reports) == BOOKKEEPING + REPORT_FILES
    return cfg, reports


def test_bad_data_leaves_previous_reports(previous, tmp_path):
    cfg, reports = previous
    write_csv(tmp_path / "data.csv", [*ROWS[:3], ("r4", 1.0, "oops", 2.0, 0)])
    cli_error("run", str(cfg))
    assert snapshot(tmp_path / "reports") == reports
    assert leftovers(tmp_path) == []


def test_failure_after_examples_were_streamed_leaves_previous_reports(previous, tmp_path):
    """All-NaN scores fail at the very end, after every chunk's examples went to staging."""
    cfg, reports = previous
    export(Fn("all_nan"), tmp_path / "model.pt2")
    message = cli_error("run", str(cfg))
    assert message.startswith(f"{tmp_path / 'model.pt2'}: the model gave non-finite scores")
    assert snapshot(tmp_path / "reports") == reports
    assert leftovers(tmp_path) == []


def test_write_failure_leaves_previous_reports(previous, tmp_path, monkeypatch):
    cfg, reports = previous
    real_write_text = Path.write_text

    def disk_full(self, *args, **kwargs):
        if self.name == "report.md":  # the last file written: the others are staged already
            raise OSError(28, "No space left on device")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full)
    write_csv(tmp_path / "data.csv", [(r[0], r[1] * 2, *r[2:]) for r in ROWS])  # new numbers
    assert cli_error("run", str(cfg)) == (
        f"{tmp_path / 'reports'}: cannot write reports (report.dir): No space left on device")
    assert snapshot(tmp_path / "reports") == reports
    assert leftovers(tmp_path) == []


def test_commit_failing_halfway_puts_previous_reports_back(previous, tmp_path, monkeypatch):
    # Regression: commit moved files one by one, so a failed move left new and old reports mixed.
    cfg, reports = previous
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == 3:  # two new files are in place when the third move fails
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr("sensaudit.reports.staging.os.replace", failing_replace)
    write_csv(tmp_path / "data.csv", [(r[0], r[1] * 2, *r[2:]) for r in ROWS])
    assert cli_error("run", str(cfg)) == (
        f"{tmp_path / 'reports'}: cannot write reports (report.dir): Input/output error")
    assert snapshot(tmp_path / "reports") == reports
    assert leftovers(tmp_path) == []


def test_interrupted_run_leaves_previous_reports(previous, tmp_path):
    cfg, reports = previous

    def interrupt(stage: str, done: int, total: int | None) -> None:
        if stage == "audit":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_audit(load_config(cfg), progress=interrupt)
    assert snapshot(tmp_path / "reports") == reports
    assert leftovers(tmp_path) == []


def test_reports_stay_as_they_were_until_the_run_completes(previous, tmp_path):
    cfg, reports = previous
    write_csv(tmp_path / "data.csv", [(r[0], r[1] * 2, *r[2:]) for r in ROWS])
    seen_during_run = []

    def watch(stage: str, done: int, total: int | None) -> None:
        # The run's lock file is there while it runs (and removed when it ends).
        seen = snapshot(tmp_path / "reports")
        assert seen.pop(".sensaudit.lock") == b""
        seen_during_run.append(seen)

    result, written = run_audit(load_config(cfg), progress=watch)
    assert seen_during_run and all(seen == reports for seen in seen_during_run)
    assert sorted(p.name for p in written) == REPORT_FILES
    after = snapshot(tmp_path / "reports")
    assert after["sensitivity.csv"] != reports["sensitivity.csv"]
    assert leftovers(tmp_path) == []


def test_first_run_failing_creates_no_report_dir(tmp_path):
    export(Scorer(), tmp_path / "model.pt2")
    write_csv(tmp_path / "data.csv", [*ROWS[:3], ("r4", 1.0, "oops", 2.0, 0)])
    cfg = write_config(tmp_path, config(tmp_path))
    cli_error("run", str(cfg))
    assert not (tmp_path / "reports").exists()
    assert leftovers(tmp_path) == []


def test_gate_failure_writes_complete_reports(previous, tmp_path):
    """Exit 1 is a complete audit, not a failed run: its reports replace the previous ones."""
    cfg, reports = previous
    cfg = write_config(tmp_path, config(tmp_path, audit={
        "proxies": [{"feature": "b", "max_share": 0.01}]}))
    result = cli("run", str(cfg), "--quiet")
    assert result.exit_code == 1
    after = snapshot(tmp_path / "reports")
    assert sorted(after) == BOOKKEEPING + REPORT_FILES
    assert b'"passed": false' in after["summary.json"]
    assert leftovers(tmp_path) == []


def test_staged_report_outside_its_block_is_refused(tmp_path):
    from sensaudit.reports.staging import StagedReport

    staged = StagedReport(tmp_path / "reports", ["json"])
    with pytest.raises(RuntimeError):
        staged.commit()
    with pytest.raises(ReportError):
        with StagedReport(tmp_path / "file" / "reports", ["json"]):
            pass  # parent is a file: the staging folder cannot be made


@pytest.fixture(autouse=True)
def _file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where a folder is expected")
