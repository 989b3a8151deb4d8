"""What goes out: one writer per report format, and atomic report folders.

To add a format, write a :class:`~sensaudit.reports.base.ReportWriter` subclass in a file of
its own and register it here with one line.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import ReportWriter
from .csv_report import CsvReport
from .json_report import JsonReport
from .markdown_report import MarkdownReport
from .staging import StagedReport

WRITERS: dict[str, type[ReportWriter]] = {
    CsvReport.format: CsvReport,
    MarkdownReport.format: MarkdownReport,
    JsonReport.format: JsonReport,
}


def open_writers(out: StagedReport, formats: Sequence[str]) -> list[ReportWriter]:
    """One writer per requested format, in the registry's order."""
    return [writer(out) for name, writer in WRITERS.items() if name in formats]


__all__ = ["WRITERS", "ReportWriter", "StagedReport", "open_writers"]
