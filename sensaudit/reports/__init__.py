"""What goes out: one writer per report format, and atomic report folders.

To add a format, write a :class:`~sensaudit.reports.base.ReportWriter` subclass in a file of
its own and register it here with one line.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

from sensaudit.reports.base import ReportWriter
from sensaudit.reports.csv_report import CsvReport
from sensaudit.reports.html_report import HtmlReport
from sensaudit.reports.json_report import JsonReport
from sensaudit.reports.junit_report import JunitReport
from sensaudit.reports.markdown_report import MarkdownReport
from sensaudit.reports.parquet_report import ParquetReport
from sensaudit.reports.png_report import PngReport
from sensaudit.reports.staging import StagedReport
from sensaudit.settings.options import build_options

WRITERS: dict[str, type[ReportWriter]] = {
    CsvReport.format: CsvReport,
    MarkdownReport.format: MarkdownReport,
    JsonReport.format: JsonReport,
    JunitReport.format: JunitReport,
    ParquetReport.format: ParquetReport,
    PngReport.format: PngReport,
    HtmlReport.format: HtmlReport,
}


def open_writers(out: StagedReport, formats: Sequence[str], *, examples: bool = True,
                 options: Mapping[str, Mapping[str, Any]] | None = None) -> list[ReportWriter]:
    """One writer per requested format, in the registry's order. ``examples=False``
    (report.examples: none): formats write no per-row file. ``options``: by format, the
    values of the options it declares (``report.<format>``, as the config parsed them); a
    format that declares options gets them as ``writer.options``, defaults filled in."""
    writers = [writer(out) for name, writer in WRITERS.items() if name in formats]
    for writer in writers:
        writer.writes_examples = examples
        if writer.Options is not None:
            given = (options or {}).get(writer.format, {})
            writer.options = build_options(writer.Options, given, f"report.{writer.format}",
                                           from_config=False)
    return writers


def unavailable(name: str) -> str | None:
    """Why a registered format cannot be written here (an optional package missing), with
    the command that installs it; None when it can."""
    writer = WRITERS.get(name)
    if writer is None:
        return None
    missing = [package for package in writer.requires if not _installed(package)]
    if not missing:
        return None
    install = (f"pip install 'sensaudit[{writer.extra}]'" if writer.extra
               else "pip install " + " ".join(missing))
    return (f"needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed; install {'it' if len(missing) == 1 else 'them'} with: {install}")


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken install
        return False


__all__ = ["WRITERS", "open_writers", "unavailable"]
