"""`sensaudit demo`: the sample's find-fix-verify story, from the installed package.

The sample (two scorers, the data they were trained and audited on, two audit configs) is
package data in ``sensaudit/sample/``, so a wheel or pipx install can run the story as a
checkout's ``make demo`` does; ``make demo`` runs this same command, so the two cannot drift.

The story's steps are data (:data:`STORY`): the command runs them, and its ``--help`` lists
them as the commands a user can type to go step by step. They run inside the folder the sample
is copied to, with the paths a user would type there, so that their output and reports are
exactly those of the earlier ``make demo`` in a checkout's root.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from sensaudit.core.errors import ConfigError

DEFAULT_FOLDER = Path("sensaudit-demo")
# What the demo copies out of the package (sensaudit/sample/<folder>/<file>), keeping the
# folders: the configs name their data as ../sample_data/... and their reports ../reports/...
SAMPLE_FOLDERS = ("configs", "sample_data")
REPORTS = "reports"


@dataclass(frozen=True)
class Step:
    """One command of the story: what it shows, its arguments, the exit code the story
    expects, and what an other exit code means."""

    heading: str
    argv: tuple[str, ...]
    expected: int
    otherwise: str

    @property
    def command(self) -> str:
        return "sensaudit " + shlex.join(self.argv)


STORY = (
    Step("scorer_v1: trained on the extract where long ads happened to be the good ones; "
         "no proxy declared",
         ("run", "configs/scorer_v1.yaml"), 1,
         "expected scorer_v1 to fail on its suspected proxy copy_length (exit 1)"),
    Step("the fix: resample the training extract so copy_length no longer tracks quality "
         "(scorer_v2 was trained on this)",
         ("resample", "sample_data/ad_copy_train.csv", "--proxy", "copy_length", "--label",
          "quality", "--out", "reports/ad_copy_train_resampled.csv"), 0,
         "expected the resample of the training extract to succeed (exit 0)"),
    Step("scorer_v2: retrained on the resampled extract; copy_length now declared as a proxy",
         ("run", "configs/scorer_v2.yaml"), 0,
         "expected scorer_v2 to pass its audit (exit 0)"),
    Step("compare v1 -> v2 on the same rows: what the retrain changed",
         ("compare", "sample_data/scorer_v1.pt2", "sample_data/scorer_v2.pt2", "--config",
          "configs/scorer_v2.yaml", "--out", "reports/compare"), 0,
         "expected the comparison of v1 and v2 to pass (exit 0)"),
)

# The closing lines once every step gave its expected exit code; {folder} is where it ran.
DONE = ("== demo OK: v1's suspected proxy copy_length found (exit 1), data resampled, v2 passed "
        "(exit 0); reports in {folder}reports/",
        "   charts and a self-contained page: {folder}reports/scorer_v1/report.html, "
        "{folder}reports/compare/comparison.html")


def story_commands() -> str:
    """The story's commands, one a line, for --help."""
    return "\n".join(f"  {step.command}" for step in STORY)


def _sample_files() -> list[tuple[str, bytes]]:
    """The sample's files as (folder/name, content), read through importlib.resources so
    that any installed form of the package (a wheel's files, a zip) serves them."""
    root = files("sensaudit") / "sample"
    return [(f"{folder}/{entry.name}", entry.read_bytes()) for folder in SAMPLE_FOLDERS
            for entry in sorted((root / folder).iterdir(), key=lambda e: e.name)
            if entry.is_file()]


def copy_sample(folder: Path) -> list[Path]:
    """Copy the sample into ``folder`` (created if missing). Refused, before anything is
    written, when ``folder`` holds a file the demo would write or a reports folder (whose
    files the audits would replace): a file the user has is never overwritten."""
    if os.path.lexists(folder) and not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder; sensaudit demo copies the sample into a "
                          "folder (a new one, or one without its files)")
    sample = _sample_files()
    clashes = [folder / name for name, _ in sample] + [folder / REPORTS]
    taken = next((path for path in clashes if os.path.lexists(path)), None)
    if taken is not None:
        raise ConfigError(f"{taken}: already exists; sensaudit demo overwrites nothing (give it "
                          "a new folder: sensaudit demo DIR)")
    written: list[Path] = []
    try:
        for name, content in sample:
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("xb") as handle:  # "x": never over a file made meanwhile
                handle.write(content)
            written.append(target)
    except OSError as exc:
        where = exc.filename or folder
        raise ConfigError(f"{where}: cannot copy the sample there "
                          f"({exc.strerror or exc})") from None
    return written


def tell_story(folder: Path, invoke: Callable[[Sequence[str]], int],
               say: Callable[[str], None]) -> tuple[int, str | None]:
    """Run the story's steps in ``folder`` with ``invoke`` (the command line's own entry:
    arguments in, exit code out), saying each heading first. Returns (0, None) when every
    step gave its expected exit code, else the code to exit with and the one-line reason:
    the step's own code when it was an error (2 bad input, 3 a bug), else 1."""
    with _inside(folder):
        for step in STORY:
            say(f"== {step.heading}")
            code = invoke(step.argv)
            if code != step.expected:
                return (code if code not in (0, 1) else 1,
                        f"demo: {step.otherwise}, got {code}")
    return 0, None


@contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """The steps take the paths a user types in ``folder``: their output and reports then name
    the same relative paths as the sample's configs do."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
