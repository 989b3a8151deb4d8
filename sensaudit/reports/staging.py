"""Atomic report folders: files are staged beside the target and moved in only on success.

A CI step may read whatever sits in the report folder, so a half-written report must never be
there: every file is written into a staging folder beside the target and moved into place only
when the whole audit succeeded. A failed run leaves earlier reports untouched. The writers, one
per format, live beside this module and write through :class:`StagedReport`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ReportError


class StagedReport:
    """Write report files into a staging folder; ``commit()`` moves them into ``target``.

    Use as a context manager: leaving the block without ``commit()`` (an error) removes the
    staging folder and leaves ``target`` as it was.
    """

    def __init__(self, target: Path, formats: Sequence[str]):
        self.target = Path(target)
        self.formats = tuple(formats)
        self.staging: Path | None = None
        self._on_close: list[Callable[[], None]] = []

    def __enter__(self) -> StagedReport:
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            # Same parent, same filesystem: the final moves are atomic renames.
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.staging-",
                                                 dir=self.target.parent))
        except OSError as exc:
            raise ReportError(f"{self.target}: cannot create report folder "
                              f"(report.dir): {exc.strerror or exc}") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_streams()
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None

    def on_close(self, close: Callable[[], None]) -> None:
        """Call ``close`` (a writer's open file) before commit and when the block exits."""
        self._on_close.append(close)

    def close_streams(self) -> None:
        while self._on_close:
            self._on_close.pop()()

    def path(self, name: str) -> Path:
        """Where a report file named ``name`` is staged."""
        return self._path(name)

    def guarded(self, write: Callable[[], None]) -> None:
        """Run ``write``; an OSError (disk full, permissions) becomes a ReportError."""
        _guarded(self.target, write)

    def _path(self, name: str) -> Path:
        if self.staging is None:
            raise RuntimeError("StagedReport used outside its `with` block")
        return self.staging / name

    def write_text(self, name: str, text: str) -> None:
        _guarded(self.target, lambda: self._path(name).write_text(text, encoding="utf-8"))

    def commit(self) -> list[Path]:
        """Move every staged file into the target folder; return their final paths."""
        if self.staging is None:
            raise RuntimeError("StagedReport.commit() outside its `with` block")
        self.close_streams()
        staged_files = sorted(p for p in self.staging.iterdir() if p.is_file())
        # A move failing halfway (disk, permissions) must not leave a mix of new and old
        # reports. Each file being replaced is kept (hard link, else copy) until every move
        # succeeded, and put back if one fails; the target never lacks a file meanwhile.
        previous = self.staging / ".previous"
        moved: list[tuple[Path, Path | None]] = []  # (final path, its kept previous version)
        try:
            self.target.mkdir(parents=True, exist_ok=True)
            previous.mkdir()
            for staged in staged_files:
                final = self.target / staged.name
                kept = None
                if final.is_file():
                    kept = previous / staged.name
                    _keep(final, kept)
                os.replace(staged, final)
                moved.append((final, kept))
        except OSError as exc:
            _roll_back(moved)
            raise ReportError(f"{self.target}: cannot write reports (report.dir): "
                              f"{exc.strerror or exc}") from None
        return [final for final, _ in moved]


def _keep(final: Path, kept: Path) -> None:
    try:
        os.link(final, kept)
    except OSError:  # a filesystem without hard links
        shutil.copy2(final, kept)


def _roll_back(moved: list[tuple[Path, Path | None]]) -> None:
    """Best effort: put the previous reports back after a failed commit."""
    for final, kept in reversed(moved):
        try:
            if kept is not None:
                os.replace(kept, final)
            else:
                final.unlink(missing_ok=True)
        except OSError:
            pass


def _guarded(target: Path, write: Any) -> None:
    try:
        write()
    except OSError as exc:
        raise ReportError(f"{target}: cannot write reports (report.dir): "
                          f"{exc.strerror or exc}") from None


