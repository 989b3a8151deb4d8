"""Atomic, locked report folders: files are staged inside the target and moved in on success.

A CI step may read whatever sits in the report folder, so a half-written report must never be
there: every file is written into a staging folder and moved into place only when the whole
audit succeeded. A failed run leaves earlier reports untouched. The writers, one per format,
live beside this module and write through :class:`StagedReport`.

sensaudit's own entries in the report folder (everything else there is the user's and is never
touched):

- ``.sensaudit.lock``: locked for the whole run, so two runs into one folder cannot leave a
  mix of both; removed by the run that holds it when the run ends (a report folder a CI job
  uploads holds no lock file). A run that waited on a lock file removed meanwhile sees that
  its path no longer names the file it locked and locks afresh, so removing it is safe. It
  lives inside the report folder, not beside it or in the temp folder: the report folder is
  the one place every run into it can write (its parent may be read-only), it is on the
  filesystem the runs share (a temp folder is per machine or per container), and a sibling
  next to ``reports/x`` would land in an upload of ``reports/``. A run killed outright
  (SIGKILL) leaves it; the next run locks and removes it.
- ``.sensaudit-staging-<pid>-<random>/``: this run's files until commit. It lives inside the
  report folder (same filesystem: the moves are atomic renames, and only the report folder
  needs to be writable). Whoever holds the lock removes any other one: its run has died.
- ``.sensaudit-manifest.json``: the files the last commit of each kind of report (audit,
  compare) wrote, so that a report no longer asked for (a format dropped) is removed instead of
  lying beside the new ones about an older model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from sensaudit.core.errors import ReportError
from sensaudit.inputs.regular import MAX_MANIFEST_BYTES, read_capped

try:
    import fcntl
except ImportError:  # Windows: no flock; runs into one folder are not serialised there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".sensaudit.lock"
# Times the folder may vanish under a run that is locking it (failed runs that made it removing
# it) before the run gives up.
_MAX_VANISHED = 100
MANIFEST_NAME = ".sensaudit-manifest.json"
STAGING_PREFIX = ".sensaudit-staging-"
# A run holds the lock for the whole audit (minutes), so a second run into the same folder
# would wait that long and then replace the first one's reports anyway. A CI user expects a
# bounded run and a clear clash, not a silent queue: wait a moment only (a run that is just
# finishing), then refuse and name the folder.
LOCK_WAIT_S = 2.0
_LOCK_POLL_S = 0.05
_PREVIOUS = ".previous"  # inside the staging folder: what the commit replaced, for rollback

PathLike = str | os.PathLike[str]
# What the report writers write (csv, json, md, html, junit xml, parquet, png charts): a name
# of any other kind is never removed as an earlier report.
REPORT_SUFFIXES = (".csv", ".json", ".md", ".html", ".xml", ".parquet", ".png")


class StagedReport:
    """Write report files into a staging folder; ``commit()`` moves them into ``target``.

    Use as a context manager: leaving the block without ``commit()`` (an error, Ctrl-C,
    SIGTERM) removes the staging folder and leaves ``target`` as it was. ``protect`` names the
    run's input files (None entries are skipped): a report folder where committing would
    replace or remove one of them is refused. ``kind`` keeps the manifests of audits and
    comparisons written into one folder apart, so neither removes the other's reports.
    """

    def __init__(self, target: PathLike, formats: Sequence[str], *,
                 protect: Iterable[PathLike | None] = (), kind: str = "audit",
                 lock_wait: float = LOCK_WAIT_S):
        self.target = Path(target)
        self.formats = tuple(formats)
        self.kind = kind
        self.staging: Path | None = None
        self._inputs = [Path(p) for p in protect if p is not None]
        self._lock_wait = lock_wait
        self._lock_fd: int | None = None
        self._locked = False
        self._created_target = False
        self._committed = False
        self._checked: set[str] = set()
        self._previous_sigterm: Any = None
        self._on_close: list[Callable[[], None]] = []

    def __enter__(self) -> StagedReport:
        for source in self._inputs:
            if _same_file(self.target, source):
                raise ReportError(f"{self.target}: report.dir is the input file {source}; "
                                  "choose another report.dir")
        try:
            self._lock()
            _remove_stale_staging(self.target)
            self.staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-",
                                                 dir=self.target))
        except BaseException as exc:
            self._release()
            if isinstance(exc, OSError):
                raise _report_error(self.target, exc) from None
            raise
        self._catch_sigterm()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore_sigterm()
        try:
            self.close_streams()
        finally:
            if self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
                self.staging = None
            self._release()

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
        if name not in self._checked:
            # Refused when the file is first staged, not after the audit at commit.
            self._refuse_replacing_an_input(name)
            self._checked.add(name)
        return self.staging / name

    def write_text(self, name: str, text: str) -> None:
        path = self._path(name)
        _guarded(self.target, lambda: path.write_text(text, encoding="utf-8"))

    def commit(self) -> list[Path]:
        """Move every staged file into the target folder, remove the reports of this kind that
        the previous commit wrote and this one did not, record the manifest; return the final
        paths of the files written. All or nothing: a failure puts the previous files back."""
        if self.staging is None:
            raise RuntimeError("StagedReport.commit() outside its `with` block")
        self.close_streams()
        # (final path, its kept previous version or None): what to undo if a step fails.
        changed: list[tuple[Path, Path | None]] = []
        try:
            staged = sorted(p for p in self.staging.iterdir() if p.is_file())
            names = [p.name for p in staged]
            for name in names:
                self._refuse_replacing_an_input(name)
            manifest, digests = _read_manifest(self.target)
            # A name is removed only if the manifest recorded the digest of what sensaudit
            # wrote there and the file still holds exactly that: a planted or edited
            # manifest cannot make a run delete a file sensaudit did not write.
            stale = [name for name in dict.fromkeys(manifest.get(self.kind, ()))
                     if name not in names and _is_report_name(name)
                     and _is_plain_file(self.target / name)
                     and name in digests and _digest(self.target / name) == digests[name]]
            for name in stale:
                self._refuse_removing_an_input(name)
            manifest[self.kind] = names
            # The digest of each file written now; other kinds' files keep theirs.
            digests.update((name, _digest(self.staging / name)) for name in names)
            listed = {name for kind_names in manifest.values() for name in kind_names}
            new_manifest = self.staging / MANIFEST_NAME
            new_manifest.write_text(json.dumps({"reports": manifest, "sha256": {
                name: digest for name, digest in sorted(digests.items())
                if name in listed and name not in stale}}, indent=2) + "\n", encoding="utf-8")
            previous = self.staging / _PREVIOUS
            previous.mkdir()
            # The target never lacks a file meanwhile: each one being replaced is kept (hard
            # link, else copy) until every move succeeded, and put back if one fails.
            for source in [*staged, new_manifest]:
                final = self.target / source.name
                kept = None
                if final.is_file():
                    kept = previous / source.name
                    _keep(final, kept)
                os.replace(source, final)
                changed.append((final, kept))
            for name in stale:
                final = self.target / name
                os.replace(final, previous / name)
                changed.append((final, previous / name))
        except BaseException as exc:  # SIGTERM and Ctrl-C too: never leave a mix behind
            _roll_back(changed)
            if isinstance(exc, OSError):
                raise _report_error(self.target, exc) from None
            raise
        self._committed = True
        return [self.target / name for name in names]

    # --- inputs the reports must not replace ---------------------------------------------

    def _refuse_replacing_an_input(self, name: str) -> None:
        source = self._input_at(name)
        if source is not None:
            raise ReportError(f"{self.target}: the report {name} would overwrite the input file "
                              f"{source}; choose another report.dir")

    def _refuse_removing_an_input(self, name: str) -> None:
        source = self._input_at(name)
        if source is not None:
            raise ReportError(f"{self.target}: removing the earlier report {name} would delete "
                              f"the input file {source}; choose another report.dir")

    def _input_at(self, name: str) -> Path | None:
        final = self.target / name
        return next((source for source in self._inputs if _same_file(final, source)), None)

    # --- the lock ---------------------------------------------------------------------------

    def _lock(self) -> None:
        """Create the report folder if needed and hold its lock; retry if a failed run that
        made the folder removed it, while we waited or before we opened the lock file."""
        deadline = time.monotonic() + self._lock_wait
        vanished = 0
        while True:
            try:
                self.target.mkdir(parents=True)
                self._created_target = True
            except FileExistsError:
                if not self.target.is_dir():
                    raise
                # A folder holding nothing but a lock was made by the run holding it (or by a
                # killed one), which removes it if it fails. Two runs failing together could
                # otherwise leave it behind: the first finds our lock file in it and keeps it,
                # and we, not its maker, would keep it too.
                self._created_target = _holds_only_a_lock(self.target)
            lock_path = self.target / LOCK_NAME
            if fcntl is None:
                self._locked = True
                return
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(
                os, "O_NOFOLLOW", 0)
            try:
                fd = os.open(lock_path, flags, 0o644)
            except FileNotFoundError:
                # A run that made the folder failed and removed it between our mkdir and here:
                # make it afresh (each removal ends a run, so this cannot go on for long).
                vanished += 1
                if vanished > _MAX_VANISHED:
                    raise
                continue
            self._lock_fd = fd
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ReportError(
                            f"another sensaudit run is writing to {self.target} (report.dir); "
                            "give each run its own report folder, or run them one after the "
                            "other") from None
                    time.sleep(_LOCK_POLL_S)
            if _is_open_as(fd, lock_path):
                self._locked = True
                return
            self._lock_fd = None
            os.close(fd)

    def _release(self) -> None:
        """Remove the lock file, then unlock: while it is still locked, so that a run waiting
        on it finds its path gone once it gets the lock, and retries. A first run that failed
        also removes the folder it created, if nothing else is in it."""
        try:
            lock_path = self.target / LOCK_NAME
            if self._locked and self._lock_fd is not None and _is_open_as(self._lock_fd,
                                                                          lock_path):
                lock_path.unlink()
            if self._locked and self._created_target and not self._committed:
                if not os.listdir(self.target):
                    self.target.rmdir()
        except OSError:
            pass
        finally:
            self._locked = False
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the last descriptor releases the flock
                self._lock_fd = None

    # --- SIGTERM: clean up like Ctrl-C ------------------------------------------------------

    def _catch_sigterm(self) -> None:
        """Turn SIGTERM into SystemExit(143) while the block runs, so a terminated run (CI
        timeout, docker stop) removes its staging folder and releases its lock. Only from the
        main thread (where Python runs signal handlers), and only over the default handler: a
        program that installed its own, or ignores SIGTERM, keeps its choice."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        _signalled.clear()
        self._previous_sigterm = signal.signal(signal.SIGTERM, _terminate)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is None:
            return
        # Someone may have installed their own handler since: leave theirs in place.
        if signal.getsignal(signal.SIGTERM) is _terminate:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_sigterm = None


_signalled: list[int] = []  # the signal _terminate turned into SystemExit, if one did


def _terminate(signum: int, frame: FrameType | None) -> None:
    _signalled.append(signum)
    raise SystemExit(128 + signum)  # the exit status a shell reports for a signal


def terminated_by() -> int | None:
    """The signal (SIGTERM) that ended this run's report block, if one did: code that the
    SystemExit passes through (Ray's ``ray.get`` turns it into SystemExit(1)) can restore the
    exit status 128 + signal."""
    return _signalled[-1] if _signalled else None


def _is_open_as(fd: int, path: Path) -> bool:
    """Whether ``path`` is still the file open as ``fd`` (not removed or replaced)."""
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _remove_stale_staging(folder: Path) -> None:
    """Remove staging folders of runs that died (SIGKILL, power loss): with the lock held, no
    other run is writing, so every staging folder there is stale."""
    for entry in folder.iterdir():
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: through symlinks, '..' and hard links."""
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return os.path.realpath(a) == os.path.realpath(b)


def _read_manifest(folder: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The previous commit's manifest (report names by kind) and the sha256 of each file it
    wrote; unreadable or malformed reads as empty, so that a file is removed only when a
    well-formed manifest says sensaudit wrote it. Anything but a regular file (a symlink to
    another file, a FIFO, /dev/zero) and anything over MAX_MANIFEST_BYTES reads as empty too:
    sensaudit writes the manifest itself, as a small plain file."""
    try:
        raw = json.loads(read_capped(folder / MANIFEST_NAME, "the report manifest",
                                     ReportError, MAX_MANIFEST_BYTES, follow_symlinks=False))
    except (OSError, ReportError, ValueError):
        return {}, {}
    reports = raw.get("reports") if isinstance(raw, dict) else None
    if not isinstance(reports, dict):
        return {}, {}
    digests = raw.get("sha256")
    return ({kind: [name for name in names if isinstance(name, str)]
             for kind, names in reports.items() if isinstance(names, list)},
            {name: digest for name, digest in digests.items()
             if isinstance(name, str) and isinstance(digest, str)}
            if isinstance(digests, dict) else {})


def _digest(path: Path) -> str:
    """sha256 of the file's bytes, read in blocks; "" if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def _is_report_name(name: str) -> bool:
    """A plain file name in the folder, of a kind the report writers write: a manifest naming
    '../x', the lock, or a user's notes.txt or train.py removes nothing."""
    return (name not in ("", ".", "..") and os.path.basename(name) == name and "\\" not in name
            and "\0" not in name and not name.startswith(".sensaudit")
            and Path(name).suffix.lower() in REPORT_SUFFIXES)


def _is_plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _keep(final: Path, kept: Path) -> None:
    try:
        os.link(final, kept)
    except OSError:  # a filesystem without hard links
        shutil.copy2(final, kept)


def _roll_back(changed: list[tuple[Path, Path | None]]) -> None:
    """Best effort: put the previous files back after a failed commit."""
    for final, kept in reversed(changed):
        try:
            if kept is not None:
                os.replace(kept, final)
            else:
                final.unlink(missing_ok=True)
        except OSError:
            pass


def _report_error(target: Path, exc: OSError) -> ReportError:
    return ReportError(f"{target}: cannot write reports (report.dir): {exc.strerror or exc}")


def _guarded(target: Path, write: Any) -> None:
    try:
        write()
    except OSError as exc:
        raise _report_error(target, exc) from None


def _holds_only_a_lock(folder: Path) -> bool:
    try:
        return os.listdir(folder) == [LOCK_NAME]
    except OSError:
        return False
